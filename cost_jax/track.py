"""Track every sequence of a benchmark and write pytracking-style result files (docs/design.md §4).

  python -m cost_jax.track --config=configs/cost_tiny.py --workdir=runs/tiny --dataset=synthetic \
      --data_dir=data/synth --results_dir=results [--tracker_name=cost] [--int_results] [--no_language] \
      [--sequences=a,b] [--overwrite] [--init=box|sentence]

Writes <results_dir>/<tracker_name>/<dataset>/<sequence>.txt (one `x,y,w,h` line a frame, 3 decimals,
or truncated ints with --int_results), <sequence>_time.txt (seconds a frame) and tracking_report.json
(cost_jax.evaluation.results_io: the sequences that could not start, with the reason, and the frames
that did not load, whose box was carried over). Resumable: a sequence whose result file already has
one line per frame is kept (said in one line) and only the rest is tracked; --overwrite tracks every
sequence again. --sequences reads only the named sequences of the tree. Sequences run
`config.track.batch_slots` at a time (cost_jax.tracker.BatchedEvaluator); the progress bar counts
frames as they are tracked (fps) and finished sequences. --config defaults to the config.json that
training recorded in --workdir; a given --config must match its model fields, or the command names
each difference in one line and exits 2.

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

import dataclasses
import os

from absl import flags
from ml_collections import config_flags
import tqdm

from cost_jax import checkpoints
from cost_jax import cli
from cost_jax import compilation_cache
from cost_jax import grounding
from cost_jax import tracker
from cost_jax import workdir as workdir_lib
from cost_jax.evaluation import results_io
from input_pipeline import readers
from input_pipeline import tokenize


def is_finished(out_dir, sequence):
  """True when the sequence's result and time files exist and hold one line a frame."""
  path = results_io.result_file(out_dir, sequence.name)
  if not (os.path.isfile(path) and os.path.isfile(results_io.time_path(path))):
    return False
  with open(path) as f:
    return sum(1 for line in f if line.strip()) == len(sequence)


@dataclasses.dataclass
class TrackedDataset:
  """What track_dataset did: names tracked now, names kept from before, {name: reason} of the
  sequences that could not start, {name: [tracker.BadFrame]} of frames whose box was carried over."""
  tracked: list
  kept: list
  failed: dict
  bad_frames: dict


def _previous_report(out_dir, echo):
  """The folder's tracking report, or an empty one (said so when the old one is unreadable)."""
  try:
    return results_io.read_tracking_report(out_dir) or results_io.empty_tracking_report()
  except ValueError as e:
    echo(f'warning: {e}; writing a new one')
    return results_io.empty_tracking_report()


def _remove_results(out_dir, sequence):
  """Delete a sequence's result and time files (an older run's, now stale)."""
  path = results_io.result_file(out_dir, sequence.name)
  for stale in (path, results_io.time_path(path)):
    if os.path.isfile(stale):
      os.remove(stale)


def track_dataset(evaluator, sequences, out_dir, int_results=False, progress=True, overwrite=False,
                  echo=print):
  """Track `sequences` into `out_dir` -> TrackedDataset.

  Sequences with complete result files are kept (one line says how many) unless overwrite. A sequence
  that cannot start gets no result file (an older one is removed) and is recorded in
  tracking_report.json with the reason; frames that do not load are recorded there too. The report is
  updated before each result file is written, so an interrupted run never loses a finished sequence's
  record; records of sequences not tracked now are kept.
  """
  os.makedirs(out_dir, exist_ok=True)
  kept = [] if overwrite else [s.name for s in sequences if is_finished(out_dir, s)]
  pending = [s for s in sequences if s.name not in set(kept)]
  if kept:
    echo(f'{out_dir} already holds complete results of {len(kept)} of {len(sequences)} sequences: '
         'kept, not tracked again (--overwrite tracks them again)')
  report = _previous_report(out_dir, echo)
  for s in pending:  # tracked again now: their old records go
    report['failed'].pop(s.name, None)
    report['bad_frames'].pop(s.name, None)
  done = TrackedDataset([], kept, {}, {})
  bar = tqdm.tqdm(total=sum(len(s) for s in pending), unit='frame', disable=not progress,
                  desc=f'{len(kept)} done before')
  bar.set_postfix(sequences=f'0/{len(pending)}')
  for result in evaluator.run(pending, on_frames=bar.update):
    name = result.sequence.name
    if result.failure:
      done.failed[name] = report['failed'][name] = result.failure
      _remove_results(out_dir, result.sequence)
      results_io.write_tracking_report(out_dir, report)
      bar.total -= len(result.sequence)
      bar.refresh()
      continue
    if result.bad_frames:
      done.bad_frames[name] = list(result.bad_frames)
      report['bad_frames'][name] = [{'frame': b.frame, 'file': b.path, 'reason': b.reason}
                                    for b in result.bad_frames]
    path = results_io.result_file(out_dir, result.sequence.name)
    results_io.write_times(path, result.times)
    results_io.write_tracking_report(out_dir, report)
    results_io.write_results(path, result.boxes, int_results=int_results)  # last: marks it finished
    done.tracked.append(name)
    bar.set_postfix(sequences=f'{len(done.tracked)}/{len(pending)}')
  bar.close()
  if not pending:
    results_io.write_tracking_report(out_dir, report)
  return done


def loaded_config(config):
  """The --config flag's value, read now: ml_collections defers a config file's load error to the
  first access, which cli.run then reports in one line before any other check or work."""
  config.to_dict()
  return config


def resolved_config(config, workdir):
  """The config to track or export with: --config (read now, see loaded_config), whose model fields
  must agree with the config.json that training recorded in `workdir`, or that recorded config when
  --config is not given. cli.UsageError naming each model field that differs, or saying that there
  is no config at all."""
  try:
    recorded = workdir_lib.read_recorded(workdir)
  except ValueError as e:
    raise cli.UsageError(str(e)) from None
  if config is None:
    if recorded is None:
      raise cli.UsageError(f'--config is required: {workdir} records no config '
                           f'({workdir_lib.config_path(workdir)} does not exist); give the config '
                           'its checkpoint was trained with')
    return workdir_lib.recorded_config(workdir)
  config = loaded_config(config)
  different = workdir_lib.model_differences(workdir, config)
  if different:
    raise cli.UsageError(f'--config is not the model {workdir} was trained with '
                         f'({workdir_lib.config_path(workdir)}): ' + '; '.join(different))
  return config


def restore_variables(workdir, config):
  """checkpoints.restore_variables(workdir, config), or cli.UsageError when workdir holds none or
  its checkpoint is not of config's model."""
  folder = checkpoints.checkpoint_dir(workdir)
  if '://' not in folder and not (os.path.isdir(folder) and any(
      n.isdigit() for n in os.listdir(folder))):
    raise cli.UsageError(f'no checkpoint in --workdir={workdir} (no step folder in {folder})')
  try:
    return checkpoints.restore_variables(workdir, config)
  except (FileNotFoundError, ValueError) as e:
    raise cli.UsageError(str(e)) from None


def load_sequences(config, dataset, data_dir, split, names):
  """The sequences to track (only `names` when given), or cli.UsageError naming the problem."""
  try:
    root = data_dir or readers.dataset_root(config, dataset)
    return readers.load_dataset(dataset, root, split=split, names=names)
  except readers.DatasetError as e:
    raise cli.UsageError(str(e)) from None


def define_flags():
  """Command-line flags, defined only when run as a program (so modules with flags import side by side)."""
  config_flags.DEFINE_config_file('config', None, "Model config file; default: the workdir's "
                                  'config.json (which a given one must match in its model fields).',
                                  lock_config=True)
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
  flags.DEFINE_integer('slots', None, 'Sequences tracked at once; default config.track.batch_slots.',
                       lower_bound=1)
  flags.DEFINE_list('sequences', None, 'Only these sequence names (only they are read).')
  flags.DEFINE_bool('overwrite', False, 'Track again the sequences that already have results.')
  flags.DEFINE_enum('init', 'box', ['box', 'sentence'],
                    "Start from frame 1's ground-truth box, or from the sentence alone.")
  flags.mark_flags_as_required(['workdir', 'dataset', 'results_dir'])


def main(argv):
  del argv
  f = flags.FLAGS
  compilation_cache.enable()
  config = resolved_config(f.config, f.workdir)
  sequences = load_sequences(config, f.dataset, f.data_dir, f.split, f.sequences)
  if f.init == 'sentence':
    check_sentences(sequences, f.no_language)
  variables = restore_variables(f.workdir, config)
  evaluator = tracker.BatchedEvaluator(config, variables, tokenize.tokenizer_for(config.model),
                                       num_slots=f.slots, use_language=not f.no_language,
                                       init=f.init)
  name = f.tracker_name or ('cost_sentence' if f.init == 'sentence' else 'cost')
  out_dir = results_io.result_folder(f.results_dir, name, f.dataset)
  done = track_dataset(evaluator, sequences, out_dir, int_results=f.int_results,
                       overwrite=f.overwrite)
  bad = sum(len(b) for b in done.bad_frames.values())
  print(f'{len(done.tracked)} sequences tracked, {len(done.kept)} already done, '
        f'{len(done.failed)} failed; results in {out_dir}'
        + (f'; {bad} unreadable frame(s) kept the previous box' if bad else ''))
  for name, reason in done.failed.items():
    print(f'FAILED {name}: {reason}')
  if done.failed and not done.tracked and not done.kept:
    raise cli.UsageError(f'none of the {len(done.failed)} sequences could be tracked (listed in '
                         f'{results_io.tracking_report_path(out_dir)})')
  started = [s for s in sequences if s.name in set(done.tracked + done.kept)]
  if f.init == 'sentence' and started:
    starts = [results_io.read_rows(results_io.result_file(out_dir, s.name))[0] for s in started]
    print(grounding.start_report(grounding.start_overlaps([s.boxes[0] for s in started], starts)))


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
