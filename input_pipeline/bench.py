"""Speed of the pair stream against the bound set by JPEG decoding alone (CPU).

  python -m input_pipeline.bench [--config=configs/cost_tiny.py] [--num_videos=4] [--num_frames=40] [--steps=20]

Generates synthetic 1280x720 JPEG videos (or reads --data_dir), then, in one run:
  pairs_per_s:        PairStream.iterate with all cores (tf.data AUTOTUNE): planning, reading files,
                      window decode, crop, colour jitter, batching to numpy; after --warmup batches.
  decode_bound_per_s: only `decode_and_crop_jpeg` of the same two windows per pair (the regions the
                      stream decoded for the timed examples), bytes already in memory, tf.data AUTOTUNE.
The two alternate for --rounds rounds, and each figure is its best round (other processes may share
the cores); the same is printed per CPU-second of this process (all threads), which other load
does not change. The last line is `pairs_per_s=... decode_bound_per_s=... ratio=...` (ratio = stream / bound).
"""

import os
import resource
import tempfile
import time

from absl import app
from absl import flags
from ml_collections import config_flags
import numpy as np
import tensorflow as tf

from input_pipeline import readers
from input_pipeline import stream as stream_lib
from input_pipeline import synthetic

FLAGS = flags.FLAGS


def define_flags():
  """Flags of this program (defined only when it runs, so importing it defines none)."""
  config_flags.DEFINE_config_file('config', 'configs/cost_tiny.py', 'config (crop sizes, batch, data options)')
  flags.DEFINE_string('data_dir', '', 'a synthetic set to reuse; empty = generate one in a temp folder')
  flags.DEFINE_integer('num_videos', 4, 'synthetic videos to generate')
  flags.DEFINE_integer('num_frames', 40, 'frames per generated video')
  flags.DEFINE_integer('steps', 20, 'timed batches')
  flags.DEFINE_integer('warmup', 3, 'untimed batches first')
  flags.DEFINE_integer('rounds', 3, 'alternate the two measurements this many times; report the best of each')


def make_data(out):
  synthetic.generate(out, 'lasot', videos=FLAGS.num_videos, seed=0, verbose=False, width=1280, height=720,
                     min_frames=FLAGS.num_frames, max_frames=FLAGS.num_frames)


class Timer:
  """Wall-clock and process CPU seconds (user + system, all threads) of a `with` block."""

  def __enter__(self):
    self.wall, self.cpu = time.perf_counter(), _cpu_seconds()
    return self

  def __exit__(self, *exc):
    self.wall, self.cpu = time.perf_counter() - self.wall, _cpu_seconds() - self.cpu


def _cpu_seconds():
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


def time_stream(stream, warmup, steps):
  """(pairs per wall second, pairs per CPU second) of stream.iterate over batches [warmup, +steps)."""
  batches = stream.iterate(0)
  for _ in range(warmup):
    next(batches)
  with Timer() as timer:
    for _ in range(steps):
      next(batches)
  batches.close()  # stops tf.data's prefetching before anything else is timed
  pairs = steps * stream.host_batch
  return pairs / timer.wall, pairs / timer.cpu


def encoded(plan, which):
  """Bytes of the plan's template ('t') or search ('s') frame."""
  if plan[which + '_bytes']:
    return plan[which + '_bytes']
  with open(plan[which + '_path'], 'rb') as f:
    return f.read()


def time_decode_bound(stream, first_step, steps):
  """(pairs per wall second, per CPU second) decoding only the windows the stream decoded for batches
  [first_step, first_step + steps)."""
  t_bytes, s_bytes, t_regions, s_regions = [], [], [], []
  for step in range(first_step, first_step + steps):
    for g in stream.host_indices(step):
      plan = stream.plan(int(g))[0]
      t_bytes.append(encoded(plan, 't'))
      s_bytes.append(encoded(plan, 's'))
      t_regions.append(plan['regions'][0])
      s_regions.append(plan['regions'][1])
  ds = tf.data.Dataset.from_tensor_slices((t_bytes, s_bytes, t_regions, s_regions))
  ds = ds.map(lambda tb, sb, tr, sr: (tf.shape(stream_lib.decode_region(tb, tr)),
                                      tf.shape(stream_lib.decode_region(sb, sr))),
              num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.prefetch(tf.data.AUTOTUNE)
  for _ in ds.take(stream.host_batch):  # warm-up: tracing, thread pools
    pass
  with Timer() as timer:
    count = sum(1 for _ in ds)
  return count / timer.wall, count / timer.cpu


def main(argv):
  del argv
  config = FLAGS.config
  config.data.weights = {'synthetic': 1.0}
  with tempfile.TemporaryDirectory() as tmp:
    root = FLAGS.data_dir or os.path.join(tmp, 'synth')
    if not FLAGS.data_dir:
      start = time.perf_counter()
      make_data(root)
      print(f'generated {FLAGS.num_videos} x {FLAGS.num_frames} frames of 1280x720 JPEG in '
            f'{time.perf_counter() - start:.1f} s')
    stream = stream_lib.PairStream(config, {'synthetic': readers.load_dataset('synthetic', root)})
    m = config.model
    print(f'stream: batch {stream.host_batch}, template {m.template_size}, search {m.search_size}, '
          f'crop rule {config.crop.size_rule}, cpus {os.cpu_count()}, tf.data AUTOTUNE; '
          f'timed {FLAGS.steps} batches after {FLAGS.warmup}')
    best = np.zeros(4)  # stream wall, stream cpu, bound wall, bound cpu
    for r in range(FLAGS.rounds):  # best of rounds: other processes may share the cores
      rates = time_stream(stream, FLAGS.warmup, FLAGS.steps) + time_decode_bound(stream, FLAGS.warmup,
                                                                                  FLAGS.steps)
      print('round {}: stream {:.1f} pairs/s ({:.1f} per CPU-s), decode bound {:.1f} pairs/s '
            '({:.1f} per CPU-s)'.format(r, *rates))
      best = np.maximum(best, rates)
    print(f'replacements: {stream.replacements()}')
    print(f'cpu: pairs_per_cpu_s={best[1]:.1f} decode_bound_per_cpu_s={best[3]:.1f} '
          f'ratio={best[1] / best[3]:.3f}  (CPU time of all threads: robust to other load)')
    print(f'pairs_per_s={best[0]:.1f} decode_bound_per_s={best[2]:.1f} ratio={best[0] / best[2]:.3f}')


if __name__ == '__main__':
  define_flags()
  app.run(main)
