"""Track every sequence of a benchmark and write pytracking-style result files (DESIGN §4).

  python -m cost_jax.track --config=configs/cost_tiny.py --workdir=runs/tiny --dataset=synthetic \
      --data_dir=data/synth --results_dir=results [--tracker_name=cost] [--int_results] [--no_language] \
      [--init=box|sentence]

Writes <results_dir>/<tracker_name>/<dataset>/<sequence>.txt (one `x,y,w,h` line a frame, 3 decimals,
or truncated ints with --int_results) and <sequence>_time.txt (seconds a frame). Resumable: a sequence
whose result file already has one line per frame is skipped, so a rerun after an interruption finishes
only the rest. Sequences run `config.track.batch_slots` at a time (cost_jax.tracker.BatchedEvaluator);
the progress bar counts frames as they are tracked (fps) and finished sequences.

--init=sentence starts every sequence from its sentence alone: frame 1 is searched with the blank
template (cost_jax.grounding) and frame 1's ground truth is not used to track; the result file's
first line is the grounded box, and frame 1's time includes the search. The default tracker name is
`cost_sentence`, so the two kinds of result never share a folder. How it is scored: cost_jax.evaluate
scores these files like any other, and every protocol there (pytracking, OSTrack, the VL-SOT toolkit)
sets frame 1 to the ground truth before scoring, as the published toolkits do; so the AUC of a
sentence-started run does not count frame 1's own error (a wrong start still costs every later
frame), and it compares with box-started rows on the frames after the first. Frame 1 is scored on its
own at the end of the run: the mean IoU of the grounded boxes with the ground truth and the share of
sequences with IoU > 0.5.
"""

import os

from absl import flags
from ml_collections import config_flags
import tqdm

from cost_jax import checkpoints
from cost_jax import cli
from cost_jax import compilation_cache
from cost_jax import grounding
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
  flags.DEFINE_string('tracker_name', None,
                      "Result folder name of this tracker; default 'cost' ('cost_sentence' with "
                      '--init=sentence).')
  flags.DEFINE_bool('int_results', False, 'Write truncated ints like published raw results.')
  flags.DEFINE_bool('no_language', False, 'Track with an empty sentence.')
  flags.DEFINE_integer('slots', None, 'Sequences tracked at once; default config.track.batch_slots.')
  flags.DEFINE_list('sequences', None, 'Only these sequence names.')
  flags.DEFINE_enum('init', 'box', ['box', 'sentence'],
                    "Start from frame 1's ground-truth box, or from the sentence alone.")
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
  if f.init == 'sentence':
    check_sentences(sequences, f.no_language)
  variables = checkpoints.restore_variables(f.workdir, config)
  evaluator = tracker.BatchedEvaluator(config, variables, tokenize.tokenizer_for(config.model),
                                       num_slots=f.slots, use_language=not f.no_language,
                                       init=f.init)
  name = f.tracker_name or ('cost_sentence' if f.init == 'sentence' else 'cost')
  out_dir = os.path.join(f.results_dir, name, f.dataset)
  tracked = track_dataset(evaluator, sequences, out_dir, int_results=f.int_results)
  print(f'{len(tracked)} sequences tracked, {len(sequences) - len(tracked)} already done; '
        f'results in {out_dir}')
  if f.init == 'sentence' and sequences:
    starts = [results_io.read_rows(result_path(out_dir, s))[0] for s in sequences]
    print(grounding.start_report(grounding.start_overlaps([s.boxes[0] for s in sequences], starts)))


def check_sentences(sequences, no_language):
  """--init=sentence needs every sequence's sentence (cli.UsageError otherwise)."""
  if no_language:
    raise cli.UsageError('--init=sentence needs the sentence: drop --no_language')
  empty = [s.name for s in sequences if not s.sentence.strip()]
  if empty:
    shown = ', '.join(empty[:5]) + (f' and {len(empty) - 5} more' if len(empty) > 5 else '')
    raise cli.UsageError(f'--init=sentence: {len(empty)} sequence(s) have no sentence ({shown})')


if __name__ == '__main__':
  define_flags()
  cli.run(main)
