"""The main job on the embedded default, offline: synthetic data -> train COST-tiny -> track -> evaluate.

  python -m cost_jax.demo [--workdir=runs/demo] [--steps=N] [--minutes=M]

1. Writes a synthetic training set and a held-out test set (another seed), VL-SOT layout with
   attributes and relative speed (input_pipeline.synthetic).
2. Trains configs/cost_tiny.py (pretrained MiniLM-L6 text encoder) for --steps steps, checkpointing into
   <workdir>/train; a second run resumes to the same step count instead of starting over. --minutes caps
   the training time on slower machines (the cap and the step reached are logged and printed, so a
   capped run is never mistaken for the calibrated one).
3. Tracks the test set with batched evaluation (all slots in one jitted, vmapped step), also with the
   sentence removed (no-language ablation), and writes a static-box baseline (frame 1's box repeated).
4. Evaluates with the VL-SOT toolkit protocol and prints one table; writes <workdir>/demo_results.json,
   success/precision plots and an animated GIF of one test video with its sentence.
Ctrl-C at any point and run again: finished data, checkpoints and result files are reused.
"""

import json
import os
import sys
import time

from absl import app
from absl import flags
from absl import logging
import numpy as np

ROWS = ('cost_tiny', 'static', 'no_language')
DATASET = 'synthetic'  # the generator's own tree, read by input_pipeline.readers.synthetic
PROTOCOL = 'vlsot'  # the VL-SOT500 toolkit's rules (DESIGN §4)


def define_flags():
  flags.DEFINE_string('workdir', 'runs/demo', 'Everything the demo writes goes here.')
  flags.DEFINE_integer('steps', 600, 'Training steps (calibrated to about 10 minutes on a 2-core CPU).')
  flags.DEFINE_float('minutes', 12.0, 'Cap on training wall time, for slower machines (0 = none).')
  flags.DEFINE_integer('train_videos', 60, 'Synthetic training videos.')
  flags.DEFINE_integer('test_videos', 20, 'Synthetic held-out test videos.')
  flags.DEFINE_integer('seed', 0, 'Seed of the training set (the test set uses seed + 1000).')
  flags.DEFINE_integer('slots', None, 'Sequences tracked at once (default config.track.batch_slots).')
  flags.DEFINE_bool('progress', True, 'Progress bars.')


def demo_config(data_dir, steps=None, minutes=0.0, progress=True):
  """configs/cost_tiny.py pointed at the synthetic training set."""
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


def static_results(sequences, out_dir):
  """The static-box baseline: frame 1's ground-truth box on every frame."""
  from cost_jax.evaluation import results_io
  os.makedirs(out_dir, exist_ok=True)
  for s in sequences:
    path = os.path.join(out_dir, s.name + '.txt')
    results_io.write_times(path, np.zeros(len(s)))
    results_io.write_results(path, np.repeat(s.boxes[:1], len(s), axis=0))


def results_table(metrics):
  """{row: {'auc', 'precision', 'norm_precision'}} from evaluation's {tracker: {dataset: {...}}}."""
  return {row: {k: metrics[row][DATASET][k] for k in ('auc', 'precision', 'norm_precision')}
          for row in ROWS}


def format_table(table):
  lines = [f"{'tracker':<14}{'AUC':>8}{'P@20':>8}{'Pnorm':>8}"]
  for row, m in table.items():
    lines.append(f"{row:<14}{m['auc']:>8.3f}{m['precision']:>8.3f}{m['norm_precision']:>8.3f}")
  return '\n'.join(lines)


def pick_gif_sequence(sequences):
  """A test video whose template is ambiguous (the sentence tells target and twin apart), if any."""
  twins = [s for s in sequences if 'identical' in s.sentence]
  return (twins or sorted(sequences, key=len, reverse=True))[0]


def run(workdir, steps=None, minutes=0.0, train_videos=60, test_videos=20, seed=0, slots=None,
        progress=True, echo=print, data_options=None):
  """The whole demo; returns the results table. Every stage reuses what a previous run finished.

  data_options: synthetic.Options overrides for both sets (tests use shorter videos).
  """
  from cost_jax import checkpoints
  from cost_jax import track
  from cost_jax import tracker
  from cost_jax import train
  from cost_jax import visualize
  from cost_jax.evaluation import report
  from input_pipeline import readers
  from input_pipeline import tokenize

  start = time.time()
  train_dir = os.path.join(workdir, 'data', 'train')
  test_dir = os.path.join(workdir, 'data', 'test')
  make_data(train_dir, train_videos, seed, echo, **(data_options or {}))
  make_data(test_dir, test_videos, seed + 1000, echo, **(data_options or {}))

  config = demo_config(train_dir, steps, minutes, progress)
  ckpt_dir = os.path.join(workdir, 'train')
  echo(f'train: configs/cost_tiny.py for {config.train.num_steps} steps in {ckpt_dir}'
       + (f' (capped at {minutes:g} min)' if minutes else ''))
  state = train.train_and_evaluate(config, ckpt_dir)
  trained_steps = int(np.asarray(state.step))
  if trained_steps < config.train.num_steps:
    echo(f'train: stopped at step {trained_steps} of {config.train.num_steps} by the --minutes cap; '
         'run again to continue')

  sequences = readers.load_dataset(DATASET, test_dir, split='all')
  variables = checkpoints.restore_variables(ckpt_dir, config)
  tok = tokenize.tokenizer_for(config.model)
  results_dir = os.path.join(workdir, 'results')
  for row, use_language in (('cost_tiny', True), ('no_language', False)):
    echo(f'track: {row} on {len(sequences)} held-out videos')
    evaluator = tracker.BatchedEvaluator(config, variables, tok, num_slots=slots,
                                         use_language=use_language)
    out_dir = os.path.join(results_dir, row, DATASET)
    stamp = os.path.join(out_dir, '.trained_steps')
    if os.path.exists(stamp) and open(stamp).read().strip() != str(trained_steps):
      import shutil  # results of an older checkpoint: track again
      shutil.rmtree(out_dir)
    track.track_dataset(evaluator, sequences, out_dir, progress=progress)
    with open(stamp, 'w') as f:
      f.write(str(trained_steps))
  static_results(sequences, os.path.join(results_dir, 'static', DATASET))

  metrics = report.run(sequences, results_dir, DATASET, trackers=list(ROWS), protocol=PROTOCOL,
                       echo=lambda *a: None)
  table = results_table(metrics)
  with open(os.path.join(workdir, 'demo_results.json'), 'w') as f:
    json.dump(table, f, indent=2)  # {row: {auc, precision, norm_precision}}
  with open(os.path.join(workdir, 'demo_run.json'), 'w') as f:
    json.dump({'trained_steps': trained_steps, 'num_steps': config.train.num_steps,
               'minutes_cap': minutes, 'protocol': PROTOCOL, 'test_videos': len(sequences),
               'seconds': round(time.time() - start, 1)}, f, indent=2)

  gif_seq = pick_gif_sequence(sequences)
  boxes = visualize.read_boxes(os.path.join(results_dir, 'cost_tiny', DATASET, gif_seq.name + '.txt'))
  gif = visualize.render(gif_seq, boxes, os.path.join(workdir, f'{gif_seq.name}.gif'))

  plots = sorted(os.path.join(dp, f) for dp, _, fs in os.walk(results_dir) for f in fs
                 if f.endswith('.png'))
  echo('')
  echo(f'COST-tiny after {trained_steps} steps, {len(sequences)} held-out synthetic videos, '
       f'VL-SOT toolkit protocol:')
  echo(format_table(table))
  echo('')
  echo(f"results: {os.path.join(workdir, 'demo_results.json')}")
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
  run(f.workdir, f.steps, f.minutes, f.train_videos, f.test_videos, f.seed, f.slots, f.progress)


if __name__ == '__main__':
  define_flags()
  app.run(main)
