"""GOT-10k train: GOT-10k_Train_NNNNNN/00000001.jpg, groundtruth.txt, absence.label, cover.label
(0-8 per frame), meta_info.ini.

visible = not absent and cover > 0. Sentence: a pseudo-sentence from meta_info.ini's class fields,
'<object_class> <motion_class> <motion_adverb>' (e.g. 'ailurus fulgens walking slowly'); the class
fields also go to attributes. split 'train' reads <root>/train when it exists, else root.
"""

import os
import re

from input_pipeline.readers import common

CLASS_FIELDS = ('object_class', 'motion_class', 'major_class', 'root_class', 'motion_adverb')


def read_meta(path):
  """{field: value} of meta_info.ini ('key: value' lines; section headers skipped)."""
  common.require(path)
  meta = {}
  with open(path, encoding='utf-8', errors='replace') as f:
    for line in f:
      match = re.match(r'\s*([A-Za-z_]+)\s*[:=]\s*(.*?)\s*$', line)
      if match:
        meta[match.group(1).lower()] = match.group(2)
  return meta


def pseudo_sentence(meta):
  words = [meta.get(k, '') for k in ('object_class', 'motion_class', 'motion_adverb')]
  return ' '.join(w for w in words if w and w.lower() not in ('unknown', 'none', 'null'))


def build(name, folder):
  common.require(folder, 'folder')
  boxes = common.read_boxes(os.path.join(folder, 'groundtruth.txt'))
  frames = common.numbered_frames(folder, range(1, len(boxes) + 1), 8, 'jpg')
  absence = common.read_flags(os.path.join(folder, 'absence.label'))
  cover = common.read_flags(os.path.join(folder, 'cover.label'))
  common.check_length(absence, len(boxes), os.path.join(folder, 'absence.label'))
  common.check_length(cover, len(boxes), os.path.join(folder, 'cover.label'))
  meta = read_meta(os.path.join(folder, 'meta_info.ini'))
  attributes = {k: meta[k] for k in CLASS_FIELDS if k in meta}
  return common.make_sequence('got10k', name, frames, boxes, (absence == 0) & (cover > 0),
                              pseudo_sentence(meta), attributes)


def scan(root, split=None, attributes_file=None, names=None):
  """Scan of the train split; names: only these sequences (None: all)."""
  del attributes_file
  if split not in (None, 'train'):
    raise common.DatasetError(f"got10k: only the 'train' split is read, got {split!r}")
  if split == 'train' and os.path.isdir(os.path.join(root, 'train')):
    root = os.path.join(root, 'train')
  items = [(n, os.path.join(root, n)) for n in common.subfolders(root)]
  return common.scan_folders(items, build, names=names)
