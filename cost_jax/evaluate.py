r"""Benchmark metrics for trackers' result folders.

  python -m cost_jax.evaluate --dataset=lasot --data_dir=/data/LaSOT --results_dir=results \
      [--trackers=cost_r50,transt] [--protocol=pytracking|ostrack|vlsot] [--compat] \
      [--attributes_file=lasot_attributes.txt]

Reads <results_dir>/<tracker>/<dataset>/<sequence>.txt (x,y,w,h per line) for every tracker folder
(or --trackers), prints a table, writes <results_dir>/metrics.json, attribute tables and plots.
Protocol default: 'vlsot' for VL-SOT230/270, else 'pytracking'. A result with NaN, negative w/h, a
bad line or the wrong number of lines, or a missing file fails that sequence, reported by name;
--compat instead pads/truncates lengths as the original toolkits do. A tracker folder's
tracking_report.json (cost_jax.track: sequences not tracked, unreadable frames) is copied into its
metrics.json entry as 'tracking'. Exit code 2, with one line, when a tracker has no sequence scored.
"""

import os

from absl import flags

from cost_jax import cli
from cost_jax.evaluation import benchmark
from cost_jax.evaluation import metrics
from cost_jax.evaluation import report

_DATASET = flags.DEFINE_string('dataset', None, 'reader name: lasot, lasot_ext, tnl2k, otb99_lang, '
                               'vlsot230, vlsot270, got10k, synthetic', required=True)
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'benchmark root', required=True)
_RESULTS_DIR = flags.DEFINE_string('results_dir', None, 'folder of <tracker>/<dataset>/ results',
                                   required=True)
_TRACKERS = flags.DEFINE_list('trackers', None, 'tracker folders (default: all under results_dir)')
_PROTOCOL = flags.DEFINE_enum('protocol', None, list(metrics.PROTOCOLS),
                              'metric protocol (default: vlsot for vlsot230/270, else pytracking)')
_COMPAT = flags.DEFINE_bool('compat', False, "reproduce the originals' length padding/truncation")
_SPLIT = flags.DEFINE_string('split', None, "dataset split (the reader's default when unset)")
_ATTRIBUTES_FILE = flags.DEFINE_string('attributes_file', None, 'per-sequence attributes (LaSOT)')
_PLOTS = flags.DEFINE_bool('plots', True, 'write success/precision PNG plots')


def tracker_folders(results_dir, trackers):
  """The tracker folders to score (default: every one under results_dir), or cli.UsageError."""
  if not os.path.isdir(results_dir):
    raise cli.UsageError(f'--results_dir={results_dir} is not a folder')
  trackers = trackers or benchmark.list_trackers(results_dir)
  if not trackers:
    raise cli.UsageError(f'no tracker folders under --results_dir={results_dir}')
  missing = [t for t in trackers if not os.path.isdir(os.path.join(results_dir, t))]
  if missing:
    raise cli.UsageError(f'no tracker folder {", ".join(missing)} under {results_dir} (it holds: '
                         f'{", ".join(benchmark.list_trackers(results_dir)) or "nothing"})')
  return trackers


def main(argv):
  del argv
  from input_pipeline import readers  # the readers know file layouts; metrics do not
  trackers = tracker_folders(_RESULTS_DIR.value, _TRACKERS.value)
  try:
    sequences = readers.load_dataset(_DATASET.value, _DATA_DIR.value, split=_SPLIT.value,
                                     attributes_file=_ATTRIBUTES_FILE.value)
  except readers.DatasetError as e:
    raise cli.UsageError(str(e)) from None
  scored = report.run(sequences, _RESULTS_DIR.value, _DATASET.value, trackers=trackers,
                      protocol=_PROTOCOL.value, compat=_COMPAT.value, plots=_PLOTS.value)
  empty = [t for t, by_dataset in scored.items() if by_dataset[_DATASET.value]['sequences'] == 0]
  if empty:
    raise cli.UsageError(f'every sequence ({len(sequences)}) failed for {", ".join(empty)}, so '
                         'nothing was scored (reasons: the FAILED lines above)')


if __name__ == '__main__':
  cli.run(main)
