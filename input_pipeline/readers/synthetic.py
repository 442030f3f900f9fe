"""The generator's own trees (input_pipeline.synthetic): LaSOT or VL-SOT layout, detected from
<root>/generator_report.json (else from the tree). split 'train'/'test' reads <root>/<split>.txt;
None or 'all' reads every sequence.

The report's per-video 'cue' (the language cue of a twin video: position, colour or motion)
becomes 0/1 attributes cue_position, cue_colour, cue_motion on every sequence, so evaluation
reports the sentence's effect per cue.
"""

import json
import os

from input_pipeline.readers import common
from input_pipeline.readers import lasot
from input_pipeline.readers import vlsot


def _report(root):
  path = os.path.join(root, 'generator_report.json')
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    return json.load(f)


def layout(root):
  """'lasot' or 'vlsot'."""
  report = _report(root)
  if report is not None:
    return report['format']
  for name in common.subfolders(root):
    folder = os.path.join(root, name)
    if any(os.path.isdir(os.path.join(folder, d)) for d in ('imgs', 'img')):
      return 'vlsot'
  return 'lasot'


def scan(root, split=None, attributes_file=None, names=None):
  """Scan of the split (None or 'all': every sequence); names: only these sequences (None: all)."""
  fmt = layout(root)
  if fmt == 'lasot':
    items = lasot.tree_items(root)
    build = lambda n, f: lasot.build('synthetic', n, f, {})
  else:
    items = vlsot.tree_items(root)
    attributes = vlsot.attribute_names(root, attributes_file)
    build = lambda n, f: vlsot.build('synthetic', n, f, attributes)
  if split not in (None, 'all'):
    wanted = common.read_name_list(os.path.join(root, f'{split}.txt'))
    by_name = dict(items)
    items = [(n, by_name.get(n, os.path.join(root, n))) for n in wanted]  # absent: 'missing folder'
  scan = common.scan_folders(items, build, names=names)
  report = _report(root)
  cues = {e['name']: e.get('cue', '') for e in (report or {}).get('sequences', [])}
  if any(cues.values()):
    from input_pipeline.synthetic import CUE_ATTRIBUTES
    for seq in scan.sequences:
      for kind, attribute in CUE_ATTRIBUTES.items():
        seq.attributes[attribute] = int(cues.get(seq.name) == kind)
  return scan
