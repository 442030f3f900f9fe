"""Track your own video: a video file, a folder of frames or a glob, from a box or the sentence alone.

  python -m cost_jax.track_video --video=clip.mp4 --sentence='red circle moving left' \
      [--box=x,y,w,h] --config=configs/cost_tiny.py --workdir=runs/demo/train --out=out/ [--gif]

--video: a video file (anything PyAV's bundled FFmpeg decodes: MP4, MKV, AVI, ...), a folder of frames
or a glob of them ('seq/*.jpg'; quote it), frames ordered by the last number in their names as the
dataset readers order them. Frames are decoded one at a time, so a long video is never held in memory.
--box: frame 1's target box x,y,w,h in pixels. Without it the target is searched for in frame 1 from
the sentence alone (cost_jax.grounding: the model with the blank template over windows tiling the
frame), the best-scoring box starts the track and its score is printed; that start needs a model
trained with template dropout (config.train.template_drop) to be any good.
--config: the model config the checkpoint in --workdir was trained with; default: the config.json
training recorded there (a given --config must match its model fields, or the command names each
difference and exits 2).

Writes into --out (created if needed; files of these names are replaced, nothing else is touched):
  <name>.txt       one x,y,w,h line a frame (pixels, 3 decimals; pytracking's result format), frame 1 =
                   the start box
  <name>_time.txt  seconds a frame (frame 1: initialisation, and the search with a sentence-only start)
  <name>.mp4       every frame with the box (red) and '#frame sentence' drawn on a strip above it, H.264
                   at the video's frame rate (25 fps for frames folders and globs, or --fps)
  <name>.gif       the same frames as a GIF, with --gif
  <name>.json      what was run: video, frames, sentence, start box and how it was found, speed
<name> is the video's file name without its extension, a frames folder's name, or for benchmark layouts
(<sequence>/img/, <sequence>/imgs/) the sequence's. Everything is written into a temporary folder
beside --out and moved into --out at the end, so an error or Ctrl-C leaves --out as it was. Mistakes
(a file that is not a video, zero frames, a box outside the frame or of zero size, a missing checkpoint,
no box and no sentence, a --box that is not 4 numbers) get one line and exit code 2.
"""

import contextlib
import json
import os
import shlex
import shutil
import tempfile
import time

from absl import flags
from absl import logging
from ml_collections import config_flags
import numpy as np
import tqdm

from cost_jax import box_ops
from cost_jax import cli
from cost_jax import video_io


def define_flags():
  """Command-line flags, defined only when run as a program."""
  flags.DEFINE_string('video', None, 'Video file, folder of frames, or a glob of frames.')
  flags.DEFINE_string('sentence', '', 'Description of the target.')
  flags.DEFINE_list('box', None, "Frame 1's box x,y,w,h px; without it, found from the sentence.")
  config_flags.DEFINE_config_file('config', None, 'Model config the checkpoint was trained with.',
                                  lock_config=True)
  flags.DEFINE_string('workdir', None, 'Training workdir holding the checkpoint.')
  flags.DEFINE_string('out', None, 'Output folder.')
  flags.DEFINE_bool('gif', False, 'Also write an animated GIF.')
  flags.DEFINE_float('fps', 0.0, 'Frame rate of the MP4/GIF; 0: the video\'s own (25 for frames).')
  flags.DEFINE_bool('progress', True, 'Progress bar.')
  flags.mark_flags_as_required(['video', 'workdir', 'out'])


# ---------------------------------------------------------------- arguments

def parse_box(values):
  """--box values -> [x, y, w, h] floats (cli.parse_box), or None when not given."""
  return None if values is None else cli.parse_box(values)


def resolve_config(config, workdir):
  """The model config to track with: --config checked against the workdir's recorded config.json,
  or that config when --config is not given (cost_jax.track.resolved_config)."""
  from cost_jax import track
  return track.resolved_config(config, workdir)


def restore(workdir, config):
  """The checkpoint's variables; cli.UsageError when there is none (cost_jax.track's check)."""
  from cost_jax import track
  verbosity = logging.get_verbosity()
  logging.set_verbosity(logging.ERROR)  # orbax warns that a restore opens the folder read-only
  try:
    return track.restore_variables(workdir, config)
  finally:
    logging.set_verbosity(verbosity)


@contextlib.contextmanager
def staged_output(out):
  """Yields a temporary folder beside `out`; on success its files are moved into `out` (created),
  on any error or interrupt the folder is removed and `out` is left as it was."""
  out = os.path.abspath(out)
  if os.path.exists(out) and not os.path.isdir(out):
    raise cli.UsageError(f'--out={out}: exists and is not a folder')
  parent = os.path.dirname(out)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f'.{os.path.basename(out)}.partial-', dir=parent)
  umask = os.umask(0)
  os.umask(umask)
  os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's 0700 would become --out's mode
  try:
    yield tmp
    if not os.path.exists(out):
      os.replace(tmp, out)
      return
    for name in sorted(os.listdir(tmp)):
      os.replace(os.path.join(tmp, name), os.path.join(out, name))
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------- tracking

def track_frames(tracker, frames, sentence, box, on_frame, progress=True, total=None):
  """Track an iterable of frames, started from `box`, or found from the sentence when box is None.

  on_frame(index, frame, box) is called for every frame with its box [4] px (x, y, w, h).
  Returns (boxes [N, 4] float64 px, times [N] s, start {'init', 'box', 'score', 'windows'}).
  """
  frames = iter(frames)
  first = next(frames)
  tic = time.perf_counter()
  start = {'init': 'box', 'box': [float(v) for v in box] if box is not None else None}
  if box is None:
    found = tracker.ground(first, sentence)
    start = {'init': 'sentence', 'box': found['target_bbox'], 'score': found['score'],
             'windows': found['windows']}
    print(f"sentence-only start: box {format_box(found['target_bbox'])} (score "
          f"{found['score']:.3f}, best of {found['windows']} windows)", flush=True)
  tracker.initialize(first, start['box'], sentence)
  boxes, times = [np.asarray(start['box'], np.float64)], [time.perf_counter() - tic]
  on_frame(0, first, boxes[0])
  bar = tqdm.tqdm(total=total, unit='frame', disable=not progress, initial=1)
  for index, frame in enumerate(frames, start=1):
    tic = time.perf_counter()
    result = tracker.track(frame)
    times.append(time.perf_counter() - tic)
    boxes.append(np.asarray(result['target_bbox'], np.float64))
    on_frame(index, frame, boxes[-1])
    bar.update(1)
  bar.close()
  return np.stack(boxes), np.asarray(times), start


def format_box(box):
  return ','.join(f'{float(v):.1f}' for v in box)


def run(video, sentence, box, config, workdir, out, gif=False, fps=0.0, progress=True):
  """The command: checks its inputs (cli.UsageError), tracks, writes the files; returns the summary
  dict that <name>.json holds."""
  from cost_jax import tracker as tracker_lib
  from cost_jax import visualize
  from input_pipeline import tokenize

  sentence = (sentence or '').strip()
  if box is None and not sentence:
    raise cli.UsageError('no --box and an empty --sentence: give frame 1\'s box, or a sentence to '
                         'find the target from')
  config = resolve_config(config, workdir)
  try:
    source = video_io.open_source(video)
    frames = video_io.same_size(iter(source), video)
    first = next(frames, None)
    if first is None:
      raise cli.UsageError(f'{video}: the video has zero frames')
    if box is not None:
      problem = box_ops.start_box_problem(box, tracker_lib.image_wh(first))
      if problem:
        raise cli.UsageError(f'--box: {problem}')
    variables = restore(workdir, config)
    tracker = tracker_lib.Tracker(config, variables, tokenize.tokenizer_for(config.model))
    rate = fps or source.fps
    with staged_output(out) as tmp:
      paths = {ext: os.path.join(tmp, source.name + ext) for ext in ('.txt', '.mp4', '.gif', '.json')}
      writers = [video_io.VideoWriter(paths['.mp4'], rate)]
      if gif:
        writers.append(video_io.VideoWriter(paths['.gif'], rate))

      def on_frame(index, frame, frame_box):
        image = np.asarray(visualize.draw_frame(frame, None, frame_box, sentence, index))
        for writer in writers:
          writer.write(image)

      with contextlib.ExitStack() as stack:
        for writer in writers:
          stack.enter_context(writer)
        tic = time.perf_counter()
        boxes, times, start = track_frames(tracker, _chain(first, frames), sentence, box, on_frame,
                                           progress, source.num_frames)
        seconds = time.perf_counter() - tic
      from cost_jax.evaluation import results_io
      results_io.write_times(paths['.txt'], times)
      results_io.write_results(paths['.txt'], boxes)
      summary = {
          'video': os.path.abspath(video), 'frames': len(boxes), 'sentence': sentence,
          'start': start, 'workdir': os.path.abspath(workdir),
          'seconds': round(seconds, 3),
          'tracked_fps': (round((len(boxes) - 1) / max(float(np.sum(times[1:])), 1e-9), 2)
                          if len(boxes) > 1 else None),  # frames after the first / their time
          'outputs': sorted(os.path.basename(p) for p in os.listdir(tmp)) + [source.name + '.json'],
      }
      with open(paths['.json'], 'w') as f:
        json.dump(summary, f, indent=2)
  except video_io.VideoError as e:
    raise cli.UsageError(str(e)) from None
  return summary


def _chain(first, rest):
  yield first
  yield from rest


def example_commands(video, sentence, box, workdir, out, config='configs/cost_tiny.py'):
  """The two track_video command lines for one video: started from `box`, and from the sentence alone."""
  common = (f'python -m cost_jax.track_video --video={shlex.quote(video)} '
            f'--sentence={shlex.quote(sentence)}')
  tail = f'--config={config} --workdir={shlex.quote(workdir)}'
  box_arg = ','.join(format(float(v), '.10g') for v in box)
  return [f'{common} --box={box_arg} {tail} --out={shlex.quote(out)}',
          f'{common} {tail} --out={shlex.quote(out + "_sentence")}']


def main(argv):
  del argv
  f = flags.FLAGS
  logging.set_verbosity(logging.WARNING)  # orbax logs every restore step at INFO
  from cost_jax import compilation_cache
  compilation_cache.enable()
  summary = run(f.video, f.sentence, parse_box(f.box), f.config, f.workdir, f.out, f.gif, f.fps,
                f.progress)
  out = os.path.abspath(f.out)
  speed = f" at {summary['tracked_fps']} frames/s" if summary['tracked_fps'] else ''
  print(f"{summary['frames']} frames tracked{speed} "
        f"(start: {summary['start']['init']} {format_box(summary['start']['box'])})")
  for name in summary['outputs']:
    print(f'wrote {os.path.join(out, name)}')


if __name__ == '__main__':
  define_flags()
  cli.run(main)
