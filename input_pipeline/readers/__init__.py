"""Benchmark readers: one module per format, one table from dataset name to reader.

  sequences = readers.load_dataset('lasot', readers.dataset_root(config, 'lasot'), split='test')

Every reader yields input_pipeline.sequence.Sequence records. A tree laid out wrongly fails here,
at construction, with the path and the reason (DatasetError, a ValueError; MissingPathError is also
a FileNotFoundError); images are not decoded (`python -m input_pipeline.check` does that).
"""

import functools
import os

from input_pipeline.readers import common
from input_pipeline.readers import got10k
from input_pipeline.readers import lasot
from input_pipeline.readers import otb99_lang
from input_pipeline.readers import synthetic
from input_pipeline.readers import tnl2k
from input_pipeline.readers import vlsot
from input_pipeline.readers.common import DatasetError
from input_pipeline.readers.common import MissingPathError
from input_pipeline.readers.common import Problem
from input_pipeline.readers.common import Scan

# name -> scan(root, split, attributes_file, names) -> Scan
DATASETS = {
    'lasot': functools.partial(lasot.scan, dataset='lasot'),
    'lasot_ext': functools.partial(lasot.scan, dataset='lasot_ext'),
    'tnl2k': tnl2k.scan,
    'otb99_lang': otb99_lang.scan,
    'vlsot230': functools.partial(vlsot.scan, dataset='vlsot230'),
    'vlsot270': functools.partial(vlsot.scan, dataset='vlsot270'),
    'got10k': got10k.scan,
    'synthetic': synthetic.scan,
}

# Sequence counts of the official releases, for input_pipeline.check's report: (name, split) -> n.
EXPECTED_COUNTS = {
    ('lasot', 'train'): 1120, ('lasot', 'test'): 280, ('lasot', None): 1400,
    ('lasot_ext', None): 150, ('tnl2k', 'train'): 1300, ('tnl2k', 'test'): 700,
    ('otb99_lang', 'train'): 51, ('otb99_lang', 'test'): 48, ('otb99_lang', None): 99,
    ('vlsot230', None): 230, ('vlsot270', None): 270, ('got10k', 'train'): 9335,
}


def scan_dataset(name, root, split=None, attributes_file=None, names=None):
  """Scan (sequences + every problem found) of dataset `name` at `root`; never raises on bad data.

  names: build only these sequences (None: all); the tree is listed, but no other sequence is read.
  """
  if name not in DATASETS:
    raise DatasetError(f'unknown dataset {name!r}; known: {", ".join(DATASETS)}')
  if not root:
    raise DatasetError(f'{name}: empty data root')
  if not os.path.isdir(root):
    raise MissingPathError(f'{name}: data root {root} is not a folder')
  try:
    return DATASETS[name](root, split=split, attributes_file=attributes_file, names=names)
  except common.SequenceProblem as e:  # the layout itself (a split folder, a table) is missing
    return Scan(problems=[Problem(e.path, e.reason)])


def load_dataset(name, root, split=None, attributes_file=None, names=None):
  """list[Sequence] of dataset `name` ('lasot', 'lasot_ext', 'tnl2k', 'otb99_lang', 'vlsot230',
  'vlsot270', 'got10k', 'synthetic') at root; split as the reader defines (None = all).

  names: only these sequences (None: all), and only they are read and validated.
  Raises DatasetError naming each path and reason when the tree (or a named sequence) is malformed
  or holds nothing, and naming every requested name the tree does not hold.
  """
  scan = scan_dataset(name, root, split, attributes_file, names)
  scan.raise_errors(name)
  if names is not None:
    listed = set(scan.listed)
    unknown = [n for n in dict.fromkeys(names) if n not in listed]
    if unknown:
      where = f'{root}' + (f' (split {split!r})' if split else '')
      examples = ', '.join(scan.listed[:3]) + (', ...' if len(scan.listed) > 3 else '')
      raise DatasetError(f'{name}: no sequence named {", ".join(unknown)} under {where}; it holds '
                         f'{len(scan.listed)}' + (f' ({examples})' if examples else ''))
  if not scan.sequences:
    raise DatasetError(f'{name}: no sequences under {root} (split {split!r})')
  return scan.sequences


def dataset_root(config, name):
  """config.data.roots.<name>, else $COST_DATA_<NAME>, else an error saying how to set either."""
  roots = config.data.roots if 'roots' in config.data else {}
  root = roots.get(name, '') if hasattr(roots, 'get') else ''
  root = root or os.environ.get('COST_DATA_' + name.upper(), '')
  if not root:
    raise DatasetError(f'no data root for {name!r}: pass --config.data.roots.{name}=/path/to/{name} '
                       f'or set the environment variable COST_DATA_{name.upper()}=/path/to/{name}')
  return root
