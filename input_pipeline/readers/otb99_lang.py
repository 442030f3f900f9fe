"""OTB99-Lang: OTB_videos/<Seq>/img/0001.jpg, groundtruth_rect.txt (comma, tab or whitespace),
sentences in OTB_query_{train,test}/<Seq>.txt (train 51, test 48; split None = both).

Frame ranges come from pytracking's OTB table (splits/otb_sequences.csv, a copy of the facts in
visionml/pytracking evaluation/otbdataset.py): start and end frame (David starts at 300, BlurCar*
folders start at their offset), digits (Board: 5), extension, annotation file, and frames to omit
at the start (Tiger1: 5, rows dropped from the ground truth too). Jogging-1/-2 and Skating2-1/-2
share a video: OTB_videos/Jogging/groundtruth_rect.1.txt / .2.txt; a copy that splits them into
OTB_videos/Jogging-1/ (with groundtruth_rect.txt) is read as well. OTB marks no visibility:
visible = the box is finite with w, h > 0.
"""

import csv
import functools
import os

from input_pipeline.readers import common
from input_pipeline.readers import tnl2k

TABLE = os.path.join(os.path.dirname(__file__), 'splits', 'otb_sequences.csv')


@functools.lru_cache(maxsize=1)
def table():
  """{pytracking name: row dict} of the OTB-100 frame table."""
  with open(TABLE, newline='') as f:
    return {row['name']: row for row in csv.DictReader(f)}


def table_entry(name):
  """The table row of an OTB99-Lang name ('Jogging-1' -> 'Jogging_1'; 'Human4' -> 'Human4_2')."""
  rows = table()
  for key in (name, name.replace('-', '_')):
    if key in rows:
      return rows[key]
  prefixed = [k for k in rows if k.split('_')[0] == name]
  if len(prefixed) == 1:
    return rows[prefixed[0]]
  raise common.SequenceProblem(name, 'not in the OTB frame table (splits/otb_sequences.csv)')


def _paths(videos, name, entry):
  """(frames folder, annotation file, extension) for this copy of OTB."""
  own = os.path.join(videos, name)
  if name != entry['frames_dir'].split('/')[0] and os.path.isdir(own):  # split copy: Jogging-1/
    return os.path.join(own, 'img'), os.path.join(own, 'groundtruth_rect.txt'), entry['ext']
  frames_dir = os.path.join(videos, entry['frames_dir'])
  folder = os.path.dirname(frames_dir)
  if not os.path.isdir(frames_dir):  # the table's KiteSurf/jpg: copies use img/
    frames_dir = os.path.join(folder, 'img')
  annotation = os.path.join(videos, entry['annotation'])
  if not os.path.isfile(annotation) and os.path.isfile(os.path.join(folder, 'groundtruth_rect.txt')):
    annotation = os.path.join(folder, 'groundtruth_rect.txt')
  return frames_dir, annotation, entry['ext']


def query_file(queries, name):
  """The sentence file of sequence `name`: OTB_query_<part>/<name>.txt."""
  return os.path.join(queries, f'{name}.txt')


def build(videos, queries, name):
  entry = table_entry(name)
  frames_dir, annotation, ext = _paths(videos, name, entry)
  start, end = int(entry['start']), int(entry['end'])
  omit, digits = int(entry['init_omit']), int(entry['digits'])
  boxes = common.read_boxes(annotation)[omit:]
  numbers = range(start + omit, end + 1)
  first = f'{start + omit:0{digits}d}'
  if not os.path.isfile(os.path.join(frames_dir, f'{first}.{ext}')):
    other = 'png' if ext == 'jpg' else 'jpg'
    ext = other if os.path.isfile(os.path.join(frames_dir, f'{first}.{other}')) else ext
  frames = common.numbered_frames(frames_dir, numbers, digits, ext, exact=False)
  common.check_counts(frames, boxes, frames_dir, annotation)
  sentence = common.read_text(query_file(queries, name))
  return common.make_sequence('otb99_lang', name, frames, boxes, tnl2k.valid_boxes(boxes), sentence)


def scan(root, split=None, attributes_file=None, names=None):
  """Scan of the split (None: train and test); names: only these sequences (None: all)."""
  del attributes_file
  if split not in (None, 'train', 'test'):
    raise common.DatasetError(f"otb99_lang: split must be 'train', 'test' or None, got {split!r}")
  videos = common.require(os.path.join(root, 'OTB_videos'), 'folder')
  scan = common.Scan()
  for part in ([split] if split else ['train', 'test']):
    queries = common.require(os.path.join(root, f'OTB_query_{part}'), 'folder')
    listed = sorted(n[:-4] for n in os.listdir(queries) if n.endswith('.txt'))
    scan.extend(common.scan_folders([(n, queries) for n in listed], lambda n, q: build(videos, q, n),
                                    names=names, sentence_file=lambda n, q: query_file(q, n)))
  return scan
