"""The main job on the embedded default, offline: synthetic data -> train COST-tiny -> track -> evaluate.

  python -m cost_jax.demo [--workdir=runs/demo] [--steps=N] [--minutes=M]

1. Writes a synthetic training set and two held-out sets (other seeds), VL-SOT layout with attributes
   and relative speed (input_pipeline.synthetic): `test`, drawn like the training set, and `language`,
   where every video is language-critical (an identical twin of the target that the first-frame
   template cannot tell apart; the sentence names the cue: position, colour change or motion).
2. Trains configs/cost_tiny.py (pretrained MiniLM-L6 text encoder) for --steps steps, checkpointing into
   <workdir>/train; a second run resumes to the same step count instead of starting over. --minutes caps
   the training time on slower machines (the cap and the step reached are logged and printed, so a
   capped run is never mistaken for the calibrated one).
3. Tracks both held-out sets with batched evaluation (all slots in one jitted, vmapped step), also with
   the sentence removed (no-language ablation), and writes a static-box baseline (frame 1's box repeated).
4. Evaluates with the VL-SOT toolkit protocol and prints one table: every row on the whole held-out set,
   on its language-critical videos (attribute language_ambiguity, both sets) and per cue; writes
   <workdir>/demo_results.json, success/precision plots, per-attribute tables and an animated GIF of
   one language-critical test video with its sentence.
Ctrl-C at any point and run again: finished data, checkpoints and result files are reused.
"""

import json
import os
import time

from absl import flags
import numpy as np

from cost_jax.evaluation import results_io

# cost_tiny: from frame 1's box with the sentence; cost_sentence: from the sentence alone (frame 1
# searched, cost_jax.grounding); no_language: from the box, empty sentence; static: frame 1's box repeated.
ROWS = ('cost_tiny', 'cost_sentence', 'no_language', 'static')
TRACKED = {'cost_tiny': dict(use_language=True), 'cost_sentence': dict(init='sentence'),
           'no_language': dict(use_language=False)}
DATASET = 'synthetic'  # the generator's own tree, read by input_pipeline.readers.synthetic
PROTOCOL = 'vlsot'  # the VL-SOT500 toolkit's rules (docs/design.md §4)
# Subsets of the held-out videos reported beside the whole set: attribute -> table column.
SUBSETS = (('all', 'all'), ('language_ambiguity', 'language-critical'), ('cue_position', 'position'),
           ('cue_colour', 'colour'), ('cue_motion', 'motion'))
# The held-out sets: name -> (seed offset, video name prefix, synthetic.Options overrides).
HELD_OUT = {'test': (1000, 'synth', {}), 'language': (2000, 'lang', {'twin_fraction': 1.0})}
# The training set and the `test` set: half the videos language-critical (with 60 videos and 30% the
# tiny model learnt neither the template's colour nor the sentence).
TRAIN_VIDEOS = 300
DRAWN = {'twin_fraction': 0.5}


def define_flags():
  flags.DEFINE_string('workdir', 'runs/demo', 'Everything the demo writes goes here.')
  flags.DEFINE_integer('steps', 600, 'Training steps (calibrated to about 10 minutes on a 2-core CPU).')
  flags.DEFINE_float('minutes', 12.0, 'Cap on training wall time, for slower machines (0 = none).')
  flags.DEFINE_integer('train_videos', TRAIN_VIDEOS, 'Synthetic training videos.')
  flags.DEFINE_integer('test_videos', 20, 'Synthetic held-out test videos (drawn like the training set).')
  flags.DEFINE_integer('language_videos', 16, 'Held-out language-critical videos (every one has a twin).')
  flags.DEFINE_integer('seed', 0, 'Seed of the training set (held-out sets: seed + 1000, seed + 2000).')
  flags.DEFINE_integer('slots', None, 'Sequences tracked at once (default config.track.batch_slots).')
  flags.DEFINE_bool('progress', True, 'Progress bars.')


def demo_config(data_dir, steps=None, minutes=0.0, progress=True, overrides=None):
  """configs/cost_tiny.py pointed at the synthetic training set.

  overrides: {'train.w_coa': 0.0, 'model.head.type': 'obj', ...} set on the config (the ablations).
  """
  from configs import cost_tiny
  config = cost_tiny.get_config()
  config.data.roots.synthetic = data_dir
  config.data.weights = {DATASET: 1.0}
  config.data.splits = {DATASET: 'all'}
  if steps is not None:  # the schedule keeps its shape: decay at the same fraction of the run
    scale = steps / config.train.num_steps
    config.train.lr_milestones = tuple(max(1, round(m * scale)) for m in config.train.lr_milestones)
    config.train.warmup_steps = min(config.train.warmup_steps, max(1, steps // 10))
    config.train.num_steps = steps
  config.train.max_minutes = minutes
  config.train.progress_bar = progress
  for field, value in (overrides or {}).items():
    *parents, leaf = field.split('.')
    node = config
    for parent in parents:
      node = node[parent]
    if leaf not in node:
      raise KeyError(f'config has no field {field!r}')
    node[leaf] = value
  return config


def make_data(out, videos, seed, echo=print, **options):
  """Synthetic VL-SOT-layout set in `out` (skipped when its report exists: a rerun reuses it).

  options: input_pipeline.synthetic.Options fields (e.g. max_frames) for smaller sets in tests.
  """
  from input_pipeline import synthetic
  report = os.path.join(out, 'generator_report.json')
  if os.path.exists(report):
    echo(f'data: reusing {out}')
    return
  echo(f'data: writing {videos} videos to {out} (seed {seed})')
  tmp = out + '.partial'
  synthetic.generate(tmp, 'vlsot', videos=videos, seed=seed, verbose=True,
                     **{'test_fraction': 0.0, **options})
  if os.path.exists(out):
    import shutil
    shutil.rmtree(out)
  os.replace(tmp, out)


def make_sets(workdir, train_videos, held_out_videos, seed, echo=print, data_options=None):
  """Writes (or reuses) the training set and the held-out sets -> (train_dir, {set: dir}).

  held_out_videos: {set name in HELD_OUT: number of videos}.
  """
  data = os.path.join(workdir, 'data')
  train_dir = os.path.join(data, 'train')
  make_data(train_dir, train_videos, seed, echo, **{**DRAWN, **(data_options or {})})
  dirs = {}
  for name, videos in held_out_videos.items():
    offset, prefix, options = HELD_OUT[name]
    dirs[name] = os.path.join(data, name)
    make_data(dirs[name], videos, seed + offset, echo,
              **{**DRAWN, **(data_options or {}), **options, 'name_prefix': prefix})
  return train_dir, dirs


def held_out_sequences(dirs):
  """All held-out sequences of the sets in `dirs` ({set: dir}), one list (their names differ)."""
  from input_pipeline import readers
  return [s for d in dirs.values() for s in readers.load_dataset(DATASET, d, split='all')]


def static_results(sequences, out_dir):
  """The static-box baseline: frame 1's ground-truth box on every frame."""
  os.makedirs(out_dir, exist_ok=True)
  for s in sequences:
    path = results_io.result_file(out_dir, s.name)
    results_io.write_times(path, np.zeros(len(s)))
    results_io.write_results(path, np.repeat(s.boxes[:1], len(s), axis=0))


def track_rows(config, ckpt_dir, sequences, results_dir, trained_steps, slots=None, progress=True,
               echo=print, rows=ROWS):
  """Tracks `sequences` with the checkpoint as the rows of TRACKED ask (box start with and without the
  sentence, sentence-only start), and writes the static baseline (static), into
  <results_dir>/<row>/synthetic, for the rows asked; result folders of another checkpoint step are
  re-tracked."""
  from cost_jax import checkpoints
  from cost_jax import track
  from cost_jax import tracker
  from input_pipeline import tokenize
  variables = checkpoints.restore_variables(ckpt_dir, config)
  tok = tokenize.tokenizer_for(config.model)
  for row, how in TRACKED.items():
    if row not in rows:
      continue
    echo(f'track: {row} on {len(sequences)} held-out videos')
    evaluator = tracker.BatchedEvaluator(config, variables, tok, num_slots=slots, **how)
    out_dir = results_io.result_folder(results_dir, row, DATASET)
    # What the results were tracked with: another checkpoint step or post-processing tracks again.
    stamp = os.path.join(out_dir, '.trained_steps')
    made_by = (f'{trained_steps} score_map={config.track.score_map} '
               f'hann_weight={config.track.hann_weight}')
    if os.path.exists(stamp) and open(stamp).read().strip() != made_by:
      import shutil
      shutil.rmtree(out_dir)
    track.track_dataset(evaluator, sequences, out_dir, progress=progress)
    with open(stamp, 'w') as f:
      f.write(made_by)
  if 'static' in rows:
    static_results(sequences, results_io.result_folder(results_dir, 'static', DATASET))


def subset_names(sequences):
  """{subset column: [sequence names]} for SUBSETS (a subset without sequences is left out)."""
  names = {}
  for attribute, column in SUBSETS:
    chosen = [s.name for s in sequences
              if attribute == 'all' or int(s.attributes.get(attribute, 0)) == 1]
    if chosen:
      names[column] = chosen
  return names


def results_table(sequences, results_dir, rows=ROWS):
  """{row: {subset: {'auc', 'precision', 'norm_precision', 'sequences'}}} under the VL-SOT protocol."""
  from cost_jax.evaluation import benchmark
  results = benchmark.score_trackers(sequences, results_dir, list(rows), DATASET, PROTOCOL)
  table = {}
  for row in rows:
    table[row] = {}
    for column, names in subset_names(sequences).items():
      m = benchmark.tracker_metrics(results[row], PROTOCOL, names)
      table[row][column] = {k: m[k] for k in ('auc', 'precision', 'norm_precision', 'sequences')}
  return table


def format_table(table):
  """AUC of every row on every subset, then P@20 and P_norm on the whole set."""
  columns = list(next(iter(table.values())))
  counts = {c: next(iter(table.values()))[c]['sequences'] for c in columns}
  head = f"{'tracker':<14}" + ''.join(f'{c:>19}' for c in columns) + f"{'P@20':>8}{'Pnorm':>8}"
  lines = ['AUC on the held-out videos (number of videos)',
           f"{'':<14}" + ''.join(f"{f'({counts[c]})':>19}" for c in columns), head]
  for row, by_subset in table.items():
    everything = by_subset['all']
    lines.append(f'{row:<14}' + ''.join(f"{by_subset[c]['auc']:>19.3f}" for c in columns)
                 + f"{everything['precision']:>8.3f}{everything['norm_precision']:>8.3f}")
  return '\n'.join(lines)


def pick_gif_sequence(sequences):
  """A language-critical test video (a colour twin first: only the sentence gives the colour that
  the grey first frame hides), else any twin, else the longest video."""
  for attribute in ('cue_colour', 'cue_position', 'language_ambiguity'):
    chosen = [s for s in sequences if int(s.attributes.get(attribute, 0)) == 1]
    if chosen:
      return chosen[0]
  return sorted(sequences, key=len, reverse=True)[0]


def train_model(config, ckpt_dir, echo=print):
  """Trains (or resumes) into ckpt_dir -> the number of steps trained."""
  from cost_jax import train
  state = train.train_and_checkpoint(config, ckpt_dir)
  trained_steps = int(np.asarray(state.step))
  if trained_steps < config.train.num_steps:
    echo(f'train: stopped at step {trained_steps} of {config.train.num_steps} by the --minutes cap; '
         'run again to continue')
  return trained_steps


def run(workdir, steps=None, minutes=0.0, train_videos=TRAIN_VIDEOS, test_videos=20,
        language_videos=16, seed=0, slots=None, progress=True, echo=print, data_options=None):
  """The whole demo; returns the results table. Every stage reuses what a previous run finished.

  data_options: synthetic.Options overrides for every set (tests use shorter videos).
  """
  from cost_jax import visualize
  from cost_jax.evaluation import report

  start = time.time()
  train_dir, dirs = make_sets(workdir, train_videos, {'test': test_videos, 'language': language_videos},
                              seed, echo, data_options)
  config = demo_config(train_dir, steps, minutes, progress)
  ckpt_dir = os.path.join(workdir, 'train')
  echo(f'train: configs/cost_tiny.py for {config.train.num_steps} steps in {ckpt_dir}'
       + (f' (capped at {minutes:g} min)' if minutes else ''))
  trained_steps = train_model(config, ckpt_dir, echo)

  sequences = held_out_sequences(dirs)
  results_dir = os.path.join(workdir, 'results')
  track_rows(config, ckpt_dir, sequences, results_dir, trained_steps, slots, progress, echo)
  report.run(sequences, results_dir, DATASET, trackers=list(ROWS), protocol=PROTOCOL,
             echo=lambda *a: None)  # metrics.json, attributes_synthetic.json, plots
  table = results_table(sequences, results_dir)
  with open(os.path.join(workdir, 'demo_results.json'), 'w') as f:
    json.dump(table, f, indent=2)  # {row: {subset: {auc, precision, norm_precision, sequences}}}
  with open(os.path.join(workdir, 'demo_run.json'), 'w') as f:
    json.dump({'trained_steps': trained_steps, 'num_steps': config.train.num_steps,
               'minutes_cap': minutes, 'protocol': PROTOCOL, 'held_out_videos': len(sequences),
               'seconds': round(time.time() - start, 1)}, f, indent=2)

  gif_seq = pick_gif_sequence(sequences)
  boxes = visualize.read_boxes(results_io.result_path(results_dir, 'cost_tiny', DATASET, gif_seq.name))
  gif = visualize.render(gif_seq, boxes, os.path.join(workdir, f'{gif_seq.name}.gif'))

  plots = sorted(os.path.join(dp, f) for dp, _, fs in os.walk(results_dir) for f in fs
                 if f.endswith('.png'))
  echo('')
  echo(f'COST-tiny after {trained_steps} steps, {len(sequences)} held-out synthetic videos, '
       f'VL-SOT toolkit protocol:')
  echo(format_table(table))
  echo('')
  echo(f"results: {os.path.join(workdir, 'demo_results.json')}")
  echo(f"per attribute: {os.path.join(results_dir, f'attributes_{DATASET}.json')}")
  for p in plots:
    echo(f'plot:    {p}')
  echo(f'gif:     {gif}')
  echo(f'demo finished in {(time.time() - start) / 60:.1f} min')
  from cost_jax import track_video
  echo(f'checkpoint: {ckpt_dir} (configs/cost_tiny.py); track a held-out video from its box, or '
       'from the sentence alone:')
  for command in track_video.example_commands(os.path.dirname(gif_seq.frames[0]), gif_seq.sentence,
                                              gif_seq.boxes[0], ckpt_dir,
                                              os.path.join(workdir, 'video')):
    echo(f'  {command}')
  return table


def main(argv):
  del argv
  f = flags.FLAGS
  from cost_jax import compilation_cache
  compilation_cache.enable()
  run(f.workdir, f.steps, f.minutes, f.train_videos, f.test_videos, f.language_videos, f.seed,
      f.slots, f.progress)


if __name__ == '__main__':
  from cost_jax import cli
  define_flags()
  cli.run(main)
