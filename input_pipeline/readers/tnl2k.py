"""TNL2K: <seq>/imgs/*.{jpg,png} (names and extensions vary), groundtruth.txt, language.txt.

Splits: train (1,300) and test (700) are separate folders; split 'train' reads the first of
<root>/train, <root>/TNL2K_train_subset, <root>/TNL2K_train that exists (likewise 'test'); split None
reads root itself. Folders without groundtruth.txt are descended once (the release ships parts).
TNL2K marks no visibility: visible = the box is finite with w, h > 0. The known damaged test frame
(test_015_Sord_video_Q01_done/imgs/00000492.png) stays in place as a frame: it fails at decode, where
input_pipeline.check reports it and the stream replaces it.
"""

import os

import numpy as np

from input_pipeline.readers import common

KNOWN_DAMAGED = ('test_015_Sord_video_Q01_done/imgs/00000492.png',)


def valid_boxes(boxes):
  """[N] bool: finite with positive width and height."""
  return np.isfinite(boxes).all(1) & (boxes[:, 2:] > 0).all(1)


def split_root(root, split):
  if split is None:
    return root
  for name in (split, f'TNL2K_{split}_subset', f'TNL2K_{split}'):
    if os.path.isdir(os.path.join(root, name)):
      return os.path.join(root, name)
  raise common.MissingPathError(f'{root}: no {split!r} split folder ({split}/, TNL2K_{split}_subset/ '
                                f'or TNL2K_{split}/)')


def tree_items(root):
  """(name, folder) of sequence folders (those holding groundtruth.txt), descending one level."""
  items = []
  for name in common.subfolders(root):
    folder = os.path.join(root, name)
    if os.path.isfile(os.path.join(folder, 'groundtruth.txt')) or os.path.isdir(
        os.path.join(folder, 'imgs')):
      items.append((name, folder))
    else:
      items.extend((sub, os.path.join(folder, sub)) for sub in common.subfolders(folder))
  return items


def build(name, folder):
  boxes = common.read_boxes(os.path.join(folder, 'groundtruth.txt'))
  frames = common.list_frames(os.path.join(folder, 'imgs'), any_suffix=True)
  common.check_counts(frames, boxes, os.path.join(folder, 'imgs'), 'groundtruth.txt')
  sentence = common.read_text(os.path.join(folder, 'language.txt'))
  return common.make_sequence('tnl2k', name, frames, boxes, valid_boxes(boxes), sentence)


def scan(root, split=None, attributes_file=None, names=None):
  """Scan of the split; names: only these sequences (None: all)."""
  del attributes_file
  return common.scan_folders(tree_items(split_root(root, split)), build, names=names)
