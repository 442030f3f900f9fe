"""Track every sequence of a benchmark and write pytracking-style result files (DESIGN §4).

  python -m cost_jax.track --config=configs/cost_tiny.py --workdir=runs/tiny --dataset=synthetic \
      --data_dir=data/synth --results_dir=results [--tracker_name=cost] [--int_results] [--no_language]

Writes <results_dir>/<tracker_name>/<dataset>/<sequence>.txt (one `x,y,w,h` line a frame, 3 decimals,
or truncated ints with --int_results) and <sequence>_time.txt (seconds a frame). Resumable: a sequence
whose result file already has one line per frame is skipped, so a rerun after an interruption finishes
only the rest. Sequences run `config.track.batch_slots` at a time (cost_jax.tracker.BatchedEvaluator);
the progress bar counts frames as they are tracked (fps) and finished sequences.
"""

import os

from absl import app
from absl import flags
from ml_collections import config_flags
import tqdm

from cost_jax import checkpoints
from cost_jax import compilation_cache
from cost_jax import tracker
from cost_jax.evaluation import results_io
from input_pipeline import readers
from input_pipeline import tokenize

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
  for result in evaluator.run(pending, on_frames=bar.update):
    path = result_path(out_dir, result.sequence)
    results_io.write_times(path, result.times)
    results_io.write_results(path, result.boxes, int_results=int_results)  # last: marks it finished
    tracked.append(result.sequence.name)
    bar.set_postfix(sequences=f'{len(tracked)}/{len(pending)}')
  bar.close()
  return tracked


def define_flags():
  """Command-line flags, defined only when run as a program (so modules with flags import side by side)."""
  config_flags.DEFINE_config_file('config', None, 'Model config file.', lock_config=True)
  flags.DEFINE_string('workdir', None, 'Training workdir holding the checkpoint.')
  flags.DEFINE_string('dataset', None, 'Dataset name (lasot, tnl2k, otb99_lang, ...).')
  flags.DEFINE_string('data_dir', None, 'Dataset root; default config.data.roots.<dataset>.')
  flags.DEFINE_string('split', None, "Dataset split; unset: the reader's default.")
  flags.DEFINE_string('results_dir', None, 'Where result folders are written.')
  flags.DEFINE_string('tracker_name', 'cost', 'Result folder name of this tracker.')
  flags.DEFINE_bool('int_results', False, 'Write truncated ints like published raw results.')
  flags.DEFINE_bool('no_language', False, 'Track with an empty sentence.')
  flags.DEFINE_integer('slots', None, 'Sequences tracked at once; default config.track.batch_slots.')
  flags.DEFINE_list('sequences', None, 'Only these sequence names.')
  flags.mark_flags_as_required(['config', 'workdir', 'dataset', 'results_dir'])


def main(argv):
  del argv
  f = flags.FLAGS
  compilation_cache.enable()
  config = f.config
  root = f.data_dir or readers.dataset_root(config, f.dataset)
  sequences = readers.load_dataset(f.dataset, root, split=f.split)
  if f.sequences:
    sequences = [s for s in sequences if s.name in set(f.sequences)]
  variables = checkpoints.restore_variables(f.workdir, config)
  evaluator = tracker.BatchedEvaluator(config, variables, tokenize.tokenizer_for(config.model),
                                       num_slots=f.slots, use_language=not f.no_language)
  out_dir = os.path.join(f.results_dir, f.tracker_name, f.dataset)
  tracked = track_dataset(evaluator, sequences, out_dir, int_results=f.int_results)
  print(f'{len(tracked)} sequences tracked, {len(sequences) - len(tracked)} already done; '
        f'results in {out_dir}')


if __name__ == '__main__':
  define_flags()
  app.run(main)
