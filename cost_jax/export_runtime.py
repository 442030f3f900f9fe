"""Track from an exported folder alone (see cost_jax.export): no model code, no config, no training code.

  tracker = ExportedTracker('exported/')
  tracker.initialize([frame], [[x, y, w, h]], ['kite flying in the sky'])   # one entry a slot
  tracker.track([frame])                                                     # -> boxes [B, 4] px

  python -m cost_jax.export_runtime --dir=exported/ --frames='seq/img/*.jpg' --box=x,y,w,h \
      --sentence='...' --out=seq.txt

It needs JAX, orbax, the tokenizer (transformers) and the small frame helpers of cost_jax.tracker; it
never imports cost_jax.models. Frames of a call are zero-padded to a common shape (a multiple of the
exported pad_multiple, so few shapes compile) and each slot's true size travels with it.

The command orders the frames by the last number in their names, as the dataset readers do (1, 2,
10). A frame that does not load keeps the previous box (logged); a first frame that does not load, a
first box that cannot start a track (box_ops.start_box_problem), a glob matching nothing or a folder
that is not an export are one-line errors (exit code 2).
"""

import glob
import json
import os

from absl import flags
import jax
import numpy as np
import orbax.checkpoint as ocp

from cost_jax import cli
from cost_jax import tracker as frames_lib  # frame helpers only; the network is not imported
from cost_jax.evaluation import results_io
from input_pipeline import tokenize
from input_pipeline.readers.common import frame_order

INIT_FILE = 'initialize.jax'  # cost_jax.export writes these names
TRACK_FILE = 'track.jax'
VARIABLES_DIR = 'variables'
EXPORTED_FILES = (INIT_FILE, TRACK_FILE, VARIABLES_DIR, 'vocab.txt', 'tokenizer.json', 'export.json')


def load_exported(path):
  with open(path, 'rb') as f:
    return jax.export.deserialize(bytearray(f.read()))


def restore_variables(path):
  """The orbax checkpoint of parameters written by cost_jax.export, as saved."""
  checkpointer = ocp.StandardCheckpointer()
  variables = checkpointer.restore(os.path.abspath(path))
  checkpointer.close()
  return variables


class ExportedTracker:
  """B slots tracked in lock-step by the exported functions; B is fixed by `initialize`."""

  def __init__(self, folder):
    self.folder = folder
    self._init = load_exported(os.path.join(folder, INIT_FILE))
    self._track = load_exported(os.path.join(folder, TRACK_FILE))
    self.variables = restore_variables(os.path.join(folder, VARIABLES_DIR))
    with open(os.path.join(folder, 'tokenizer.json')) as f:
      self.tokenizer = tokenize.Tokenizer(os.path.join(folder, 'vocab.txt'), json.load(f)['max_len'])
    with open(os.path.join(folder, 'export.json')) as f:
      self.pad_multiple = json.load(f)['pad_multiple']
    self.state = None

  def _batch(self, frames):
    """List of uint8 [H_i, W_i, 3] -> (padded uint8 [B, H, W, 3], image_wh float32 [B, 2])."""
    shape = frames_lib.padded_shape([f.shape for f in frames], self.pad_multiple)
    return (np.stack([frames_lib.pad_frame(f, shape) for f in frames]),
            np.stack([frames_lib.image_wh(f) for f in frames]))

  def initialize(self, frames, boxes, sentences):
    """B first frames, B boxes (x, y, w, h) px, B sentences: caches template and text per slot."""
    batch, sizes = self._batch(frames)
    ids, mask = self.tokenizer.encode_batch(sentences)
    self.state = self._init.call(self.variables, batch, sizes, np.asarray(boxes, np.float32),
                                 ids, mask)

  def track(self, frames):
    """B next frames -> boxes float32 [B, 4] (x, y, w, h) px."""
    batch, sizes = self._batch(frames)
    self.state, boxes, _ = self._track.call(self.variables, self.state, batch, sizes)
    return np.asarray(boxes)


def track_sequence(folder, frame_paths, box, sentence=''):
  """One sequence from files -> (boxes [N, 4] px (frame 0 = the given box), [tracker.BadFrame]).

  A frame that does not load keeps the previous box; tracker.StartError when the first frame does
  not load or `box` cannot start a track (cost_jax.tracker.track_files).
  """
  tracker = ExportedTracker(folder)
  return frames_lib.track_files(lambda frame, b: tracker.initialize([frame], [b], [sentence]),
                                lambda frame: tracker.track([frame])[0], frame_paths, box)


def define_flags():
  """Command-line flags, defined only when run as a program."""
  flags.DEFINE_string('dir', None, 'Folder written by cost_jax.export.')
  flags.DEFINE_string('frames', None, 'Glob of the frames, ordered by the number in their names.')
  flags.DEFINE_list('box', None, 'First-frame box x,y,w,h px.')
  flags.DEFINE_string('sentence', '', 'Description of the target.')
  flags.DEFINE_string('out', None, 'Result file (x,y,w,h a line, 3 decimals); default: print.')
  flags.mark_flags_as_required(['dir', 'frames', 'box'])


def main(argv):
  del argv
  f = flags.FLAGS
  paths = sorted(glob.glob(f.frames), key=frame_order)
  if not paths:
    raise cli.UsageError(f'--frames={f.frames} matches no file')
  box = cli.parse_box(f.box)
  missing = [n for n in EXPORTED_FILES if not os.path.exists(os.path.join(f.dir, n))]
  if missing:
    raise cli.UsageError(f'--dir={f.dir} is not an exported tracker (no {", ".join(missing)}); '
                         'write one with python -m cost_jax.export')
  try:
    frames_lib.start_frame(frames_lib.load_frame, paths[0], box)  # before loading the artifacts
  except frames_lib.StartError as e:
    raise cli.UsageError(f'cannot track {f.frames}: {e}') from None
  boxes, _ = track_sequence(f.dir, paths, box, f.sentence)  # frames that do not load are logged
  if f.out:
    results_io.write_results(f.out, boxes)
  else:
    print(results_io.format_boxes(boxes), end='')


if __name__ == '__main__':
  define_flags()
  cli.run(main)
