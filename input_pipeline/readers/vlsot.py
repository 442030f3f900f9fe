"""VL-SOT230 / VL-SOT270 (VL-SOT500): <Video>/imgs/000001.jpg (img/ accepted),
groundtruth_rect.txt (comma; 0,0,0,0 = absent), language.txt, absent.txt (0/1 per frame),
attributes.txt (one comma row of 17 values), relative_speed.txt (VL-SOT270).

visible = absent.txt says 0 and the box is not 0,0,0,0; boxes stay as in the file. Attribute names:
from attributes_file (one name a line) or <root>/attribute_names.txt when present, otherwise
positional 'attr01'..'attr17' (their meaning is the release's, not guessed here).
relative_speed.txt -> attributes['relative_speed'] (mean of its numbers).
"""

import os

import numpy as np

from input_pipeline.readers import common

NUM_ATTRIBUTES = 17


def attribute_names(root, attributes_file):
  path = attributes_file or os.path.join(root, 'attribute_names.txt')
  if attributes_file or os.path.isfile(path):
    names = common.read_name_list(path)
    if len(names) != NUM_ATTRIBUTES:
      raise common.DatasetError(f'{path}: {len(names)} names, expected {NUM_ATTRIBUTES}')
    return names
  return [f'attr{i + 1:02d}' for i in range(NUM_ATTRIBUTES)]


def read_attribute_row(path, names):
  values = common.read_numbers(path)
  if len(values) != len(names):
    raise common.SequenceProblem(path, f'{len(values)} values, expected {len(names)}')
  return {n: int(v) for n, v in zip(names, values)}


def build(dataset, name, folder, names):
  common.require(folder, 'folder')
  boxes = common.read_boxes(os.path.join(folder, 'groundtruth_rect.txt'))
  image_dir = os.path.join(folder, 'imgs')
  if not os.path.isdir(image_dir) and os.path.isdir(os.path.join(folder, 'img')):
    image_dir = os.path.join(folder, 'img')
  frames = common.list_frames(image_dir)
  common.check_counts(frames, boxes, image_dir, 'groundtruth_rect.txt')
  visible = ~(boxes == 0).all(1)
  absent_path = os.path.join(folder, 'absent.txt')
  if os.path.isfile(absent_path):
    absent = common.read_flags(absent_path)
    common.check_length(absent, len(boxes), absent_path)
    visible &= absent == 0
  attributes = {}
  if os.path.isfile(os.path.join(folder, 'attributes.txt')):
    attributes = read_attribute_row(os.path.join(folder, 'attributes.txt'), names)
  speed_path = os.path.join(folder, 'relative_speed.txt')
  if os.path.isfile(speed_path):
    values = common.read_numbers(speed_path)
    if not values:
      raise common.SequenceProblem(speed_path, 'empty')
    attributes['relative_speed'] = float(np.mean(values))
  sentence = common.read_text(os.path.join(folder, 'language.txt'))
  return common.make_sequence(dataset, name, frames, boxes, visible, sentence, attributes)


def tree_items(root):
  return [(n, os.path.join(root, n)) for n in common.subfolders(root)]


def scan(root, split=None, attributes_file=None, dataset='vlsot230', names=None):
  """Scan of the tree; names: only these sequences (None: all)."""
  if split not in (None, 'test', 'all'):
    raise common.DatasetError(f"{dataset}: no split {split!r} (use None or 'test')")
  attributes = attribute_names(root, attributes_file)
  return common.scan_folders(tree_items(root), lambda n, f: build(dataset, n, f, attributes),
                             names=names)
