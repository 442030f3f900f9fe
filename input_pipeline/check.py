"""Validate a dataset tree before training or tracking on it.

  python -m input_pipeline.check --dataset=lasot --data_dir=/data/lasot --split=test [--full]

Prints the sequences and frames found and every problem with its path: missing files or frames,
box count != frame count, unparsable annotations (errors: the tree is unusable as laid out), and
invalid boxes on visible frames, empty sentences, frames that do not decode (warnings: bad data the
stream replaces). Frames decoded with PIL: the first, the last and --sample more per sequence, or
all with --full; --list prints every sequence. Exit status 1 when there is an error or no
sequence (--strict: any warning too).
"""

import os
import sys

from absl import app
from absl import flags
import numpy as np
from PIL import Image

from input_pipeline import readers
from input_pipeline.readers import tnl2k

FLAGS = flags.FLAGS
flags.DEFINE_string('dataset', None, 'one of: ' + ', '.join(readers.DATASETS))
flags.DEFINE_string('data_dir', None, 'dataset root')
flags.DEFINE_string('split', None, "split to check ('train', 'test'; default: what the reader reads "
                    'without one)')
flags.DEFINE_string('attributes_file', None, 'attribute file (LaSOT: pytracking JSON or CSV)')
flags.DEFINE_bool('full', False, 'decode every frame, not a sample')
flags.DEFINE_integer('sample', 3, 'frames decoded per sequence besides the first and the last')
flags.DEFINE_bool('strict', False, 'warnings also make the exit status non-zero')
flags.DEFINE_bool('list', False, 'print one line per sequence: name, frames, visible frames, sentence')


def sample_indices(n, sample, full):
  """Frame indices to decode: all when full, else first, last and `sample` evenly spaced."""
  if full or n <= sample + 2:
    return list(range(n))
  return sorted({0, n - 1, *np.linspace(0, n - 1, sample + 2).round().astype(int).tolist()})


def decode_problem(path):
  """None when PIL decodes the file fully, else the reason."""
  try:
    with Image.open(path) as image:
      image.load()
    return None
  except (OSError, ValueError, Image.DecompressionBombError) as e:
    return f'unreadable image ({type(e).__name__}: {e})'


def check(dataset, data_dir, split=None, attributes_file=None, full=False, sample=3, out=print,
          list_sequences=False):
  """Scans and decodes; prints with `out`; returns (scan, decode problems)."""
  scan = readers.scan_dataset(dataset, data_dir, split, attributes_file)
  if list_sequences:
    for seq in scan.sequences:
      out(f'{seq.name}: {len(seq)} frames, {int(seq.visible.sum())} visible, {seq.sentence!r}')
  decode = []
  for seq in scan.sequences:
    for i in sample_indices(len(seq), sample, full):
      reason = decode_problem(seq.frames[i])
      if reason:
        if any(seq.frames[i].endswith(k) for k in tnl2k.KNOWN_DAMAGED):
          reason += ' (known damaged TNL2K frame)'
        decode.append(readers.Problem(seq.frames[i], reason, 'warning'))
  for problem in scan.problems + decode:
    out(str(problem))
  frames = sum(len(s) for s in scan.sequences)
  visible = sum(int(s.visible.sum()) for s in scan.sequences)
  expected = readers.EXPECTED_COUNTS.get((dataset, split))
  errors = len(scan.errors())
  warnings = len(scan.problems) - errors + len(decode)
  out(f'{dataset} ({split or "all"}) at {data_dir}: {len(scan.sequences)} sequences'
      + (f' (official release: {expected})' if expected else '')
      + f', {frames} frames ({visible} with a visible target), {errors} errors, {warnings} warnings')
  return scan, decode


def main(argv):
  del argv
  if not FLAGS.dataset or not FLAGS.data_dir:
    sys.exit('usage: python -m input_pipeline.check --dataset=NAME --data_dir=PATH [--split=...]')
  try:
    scan, decode = check(FLAGS.dataset, os.path.expanduser(FLAGS.data_dir), FLAGS.split,
                         FLAGS.attributes_file, FLAGS.full, FLAGS.sample,
                         list_sequences=FLAGS.list)
  except readers.DatasetError as e:
    print(f'error: {e}')
    sys.exit(1)
  unusable = bool(scan.errors()) or not scan.sequences
  if FLAGS.strict:
    unusable = unusable or bool(scan.problems) or bool(decode)
  print('UNUSABLE' if unusable else 'OK')
  sys.exit(1 if unusable else 0)


if __name__ == '__main__':
  app.run(main)
