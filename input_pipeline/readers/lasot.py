"""LaSOT and LaSOT-ext: <class>/<class>-<n>/img/00000001.jpg, groundtruth.txt (x,y,w,h comma),
full_occlusion.txt and out_of_view.txt (one comma row of 0/1; visible = neither), nlp.txt.

Splits: LaSOT's official protocol-II lists (1,120 train / 280 test) in splits/lasot_{train,test}.txt;
LaSOT-ext (150) has none (split None or 'test' = every sequence in the tree). Attributes are not in
the tree: pass attributes_file (see read_attributes), they are never shipped here.
"""

import csv
import json
import os

from input_pipeline.readers import common

SPLIT_DIR = os.path.join(os.path.dirname(__file__), 'splits')


def split_names(split):
  """Official LaSOT sequence names of 'train' (1,120) or 'test' (280)."""
  if split not in ('train', 'test'):
    raise common.DatasetError(f"lasot: split must be 'train', 'test' or None, got {split!r}")
  return common.read_name_list(os.path.join(SPLIT_DIR, f'lasot_{split}.txt'))


def read_attributes(path):
  """{sequence name: {attribute: 0/1}} from a user-given file.

  Accepted: pytracking's JSON (keys 'att_name_short' and, per sequence, the list of its short names)
  or a CSV with a header 'name,<attr>,<attr>,...' and one row of 0/1 per sequence.
  """
  try:
    text = '\n'.join(common.read_lines(path))
  except common.SequenceProblem as e:
    raise common.DatasetError(str(e)) from None
  if path.endswith('.json'):
    try:
      table = json.loads(text)
    except json.JSONDecodeError as e:
      raise common.DatasetError(f'{path}: not JSON ({e})') from None
    names = table.get('att_name_short') if isinstance(table, dict) else None
    if not names:
      raise common.DatasetError(f"{path}: no 'att_name_short' list (pytracking attribute JSON)")
    return {seq: {a: int(a in present) for a in names} for seq, present in table.items()
            if not seq.startswith('att_name')}
  rows = list(csv.reader(text.splitlines()))
  if not rows or rows[0][0].strip() != 'name':
    raise common.DatasetError(f"{path}: expected a CSV whose header starts with 'name'")
  header = [h.strip() for h in rows[0][1:]]
  out = {}
  for number, row in enumerate(rows[1:], 2):
    if len(row) != len(header) + 1:
      raise common.DatasetError(f'{path}: line {number}: {len(row) - 1} values, header has '
                                f'{len(header)}')
    try:
      out[row[0].strip()] = {h: int(float(v)) for h, v in zip(header, row[1:])}
    except ValueError:
      raise common.DatasetError(f'{path}: line {number}: not numbers: {",".join(row[1:])!r}') from None
  return out


def build(dataset, name, folder, attributes):
  """One LaSOT-layout sequence folder -> Sequence (raises SequenceProblem)."""
  common.require(folder, 'folder')
  boxes = common.read_boxes(os.path.join(folder, 'groundtruth.txt'))
  frames = common.numbered_frames(os.path.join(folder, 'img'), range(1, len(boxes) + 1), 8, 'jpg')
  occlusion = common.read_flags(os.path.join(folder, 'full_occlusion.txt'))
  out_of_view = common.read_flags(os.path.join(folder, 'out_of_view.txt'))
  common.check_length(occlusion, len(boxes), os.path.join(folder, 'full_occlusion.txt'))
  common.check_length(out_of_view, len(boxes), os.path.join(folder, 'out_of_view.txt'))
  sentence = common.read_text(os.path.join(folder, 'nlp.txt'))
  visible = (occlusion == 0) & (out_of_view == 0)
  return common.make_sequence(dataset, name, frames, boxes, visible, sentence,
                              attributes.get(name, {}))


def tree_items(root):
  """(name, folder) of every <class>/<class>-<n> folder under root."""
  items = []
  for cls in common.subfolders(root):
    for name in common.subfolders(os.path.join(root, cls)):
      items.append((name, os.path.join(root, cls, name)))
  return items


def scan(root, split=None, attributes_file=None, dataset='lasot', names=None):
  """Scan of the split (or the whole tree); names: only these sequences (None: all)."""
  attributes = read_attributes(attributes_file) if attributes_file else {}
  if dataset == 'lasot' and split is not None:
    items = [(n, os.path.join(root, n.rsplit('-', 1)[0], n)) for n in split_names(split)]
  else:
    if split not in (None, 'test', 'all'):
      raise common.DatasetError(f"{dataset}: no split {split!r} (use None or 'test')")
    items = tree_items(root)
  return common.scan_folders(items, lambda n, f: build(dataset, n, f, attributes), names=names)
