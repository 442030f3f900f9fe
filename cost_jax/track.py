"""Track every sequence of a benchmark and write pytracking-style result files (DESIGN §4).

  python -m cost_jax.track --config=configs/cost_tiny.py --workdir=runs/tiny --dataset=synthetic \
      --data_dir=data/synth --results_dir=results [--tracker_name=cost] [--int_results] [--no_language]

Writes <results_dir>/<tracker_name>/<dataset>/<sequence>.txt (one `x,y,w,h` line a frame, 3 decimals,
or truncated ints with --int_results) and <sequence>_time.txt (seconds a frame). Resumable: a sequence
whose result file already has one line per frame is skipped, so a rerun after an interruption finishes
only the rest. Sequences run `config.track.batch_slots` at a time (cost_jax.tracker.BatchedEvaluator);
the progress bar counts frames (fps) and sequences.
"""

import os

from absl import app
from absl import flags
from ml_collections import config_flags
import tqdm

from cost_jax import checkpoints
from cost_jax import tracker
from cost_jax.evaluation import results_io
from input_pipeline import readers
from input_pipeline import tokenize

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Model config file.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Training workdir holding the checkpoint.')
_DATASET = flags.DEFINE_string('dataset', None, 'Dataset name (lasot, tnl2k, otb99_lang, ...).')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'Dataset root; default config.data.roots.<dataset>.')
_SPLIT = flags.DEFINE_string('split', None, 'Dataset split; default the reader\'s test split.')
_RESULTS_DIR = flags.DEFINE_string('results_dir', None, 'Where result folders are written.')
_TRACKER_NAME = flags.DEFINE_string('tracker_name', 'cost', 'Result folder name of this tracker.')
_INT_RESULTS = flags.DEFINE_bool('int_results', False, 'Write truncated ints like published results.')
_NO_LANGUAGE = flags.DEFINE_bool('no_language', False, 'Track with an empty sentence.')
_SLOTS = flags.DEFINE_integer('slots', None, 'Sequences tracked at once; default config.track.batch_slots.')
_SEQUENCES = flags.DEFINE_list('sequences', None, 'Only these sequence names.')

flags.mark_flags_as_required(['config', 'workdir', 'dataset', 'results_dir'])


def result_path(out_dir, sequence):
  return os.path.join(out_dir, sequence.name + '.txt')


def is_finished(out_dir, sequence):
  """True when the sequence's result and time files exist and hold one line a frame."""
  path = result_path(out_dir, sequence)
  if not (os.path.isfile(path) and os.path.isfile(results_io.time_path(path))):
    return False
  with open(path) as f:
    return sum(1 for line in f if line.strip()) == len(sequence)


def track_dataset(evaluator, sequences, out_dir, int_results=False, progress=True):
  """Track the unfinished `sequences` into `out_dir`; returns the names tracked (skipped ones not)."""
  os.makedirs(out_dir, exist_ok=True)
  pending = [s for s in sequences if not is_finished(out_dir, s)]
  tracked = []
  bar = tqdm.tqdm(total=sum(len(s) for s in pending), unit='frame', disable=not progress,
                  desc=f'{len(sequences) - len(pending)} done before')
  bar.set_postfix(sequences=f'0/{len(pending)}')
  for result in evaluator.run(pending):
    path = result_path(out_dir, result.sequence)
    results_io.write_times(path, result.times)
    results_io.write_results(path, result.boxes, int_results=int_results)  # last: marks it finished
    tracked.append(result.sequence.name)
    bar.update(len(result.sequence))
    bar.set_postfix(sequences=f'{len(tracked)}/{len(pending)}')
  bar.close()
  return tracked


def main(argv):
  del argv
  config = _CONFIG.value
  root = _DATA_DIR.value or readers.dataset_root(config, _DATASET.value)
  sequences = readers.load_dataset(_DATASET.value, root, split=_SPLIT.value)
  if _SEQUENCES.value:
    sequences = [s for s in sequences if s.name in set(_SEQUENCES.value)]
  variables = checkpoints.restore_variables(_WORKDIR.value, config)
  evaluator = tracker.BatchedEvaluator(config, variables, tokenize.tokenizer_for(config.model),
                                       num_slots=_SLOTS.value, use_language=not _NO_LANGUAGE.value)
  out_dir = os.path.join(_RESULTS_DIR.value, _TRACKER_NAME.value, _DATASET.value)
  tracked = track_dataset(evaluator, sequences, out_dir, int_results=_INT_RESULTS.value)
  print(f'{len(tracked)} sequences tracked, {len(sequences) - len(tracked)} already done; '
        f'results in {out_dir}')


if __name__ == '__main__':
  app.run(main)
