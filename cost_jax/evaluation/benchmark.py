"""Scoring trackers' result folders against a benchmark's Sequence records.

`evaluate(sequences, results_dir, trackers, dataset, protocol, compat=False)` -> {tracker: {dataset: {
'auc', 'precision', 'norm_precision', 'np_auc', 'ciou_auc', 'macc', 'frames', 'sequences', 'failed',
'protocol', 'result_format'[, 'tracking']}}}: fractions in [0, 1], None where the protocol does not
define a metric, 'failed' = {sequence name: reason} (those sequences are reported, never scored).
'tracking' (only when the tracker folder holds cost_jax.track's tracking_report.json) = that report
restricted to the scored dataset's sequences: {'failed': {name: reason}, 'bad_frames': {name: [...]}},
or {'error': why it could not be read}.
"""

import dataclasses
import os

import numpy as np

from cost_jax.evaluation import metrics as M
from cost_jax.evaluation.results_io import (SequenceFailure, is_integer_format, read_rows,
                                            read_tracking_report, result_path, rows_to_boxes)


@dataclasses.dataclass
class SequenceScore:
  """One sequence of one tracker: its curves (metrics.toolkit_curves / vlsot_curves), mACC (vlsot only),
  frames scored, and whether the file held whole numbers only."""
  curves: dict
  accuracy: float | None
  frames: int
  integer: bool


@dataclasses.dataclass
class TrackerResult:
  """All sequences of one tracker on one dataset: scored ones by name, failed ones by name -> reason,
  and the folder's tracking report (None when it has none; {'error': ...} when unreadable)."""
  scores: dict
  failed: dict
  tracking: dict | None = None


PLOTS_DIR = 'plots'  # the report's own output folder under results_dir: never a tracker


def list_trackers(results_dir):
  """Every folder under results_dir (sorted), except the report's plots folder."""
  return sorted(d for d in os.listdir(results_dir)
                if os.path.isdir(os.path.join(results_dir, d)) and d != PLOTS_DIR)


def default_protocol(dataset):
  """VL-SOT230/270 use the VL-SOT500 toolkit (docs/design.md §4); everything else pytracking's
  analysis."""
  return 'vlsot' if dataset.startswith('vlsot') else 'pytracking'


def score_sequence(path, seq, protocol, compat=False):
  """Score one result file against Sequence `seq`; raises SequenceFailure with the reason."""
  if len(seq.boxes) == 0:
    raise SequenceFailure('ground truth has no frames')  # extract_results: 'Seq length zero'
  rows = read_rows(path)
  boxes = rows_to_boxes(rows, compat)
  if protocol == 'vlsot':
    curves = M.vlsot_curves(boxes, seq.boxes, compat)
    accuracy = M.vlsot_accuracy(rows, seq.boxes)
    frames = min(len(boxes), len(seq.boxes))
  elif protocol in ('pytracking', 'ostrack'):
    key = M.original_key(seq.dataset)
    visible = seq.visible if key in M.USES_VISIBILITY else None
    overlap, center, norm_center, _ = M.toolkit_frame_errors(
        boxes, seq.boxes, visible, key, protocol, compat)
    curves = M.toolkit_curves(overlap, center, norm_center)
    accuracy = None
    frames = len(seq.boxes)
  else:
    raise ValueError(f'unknown protocol {protocol!r}; expected one of {M.PROTOCOLS}')
  return SequenceScore(curves, accuracy, frames, is_integer_format(rows))


def tracking_report(results_dir, tracker, dataset):
  """The tracking report of `<results_dir>/<tracker>/<dataset>` (None when there is none;
  {'error': reason} when it cannot be read)."""
  try:
    return read_tracking_report(os.path.join(results_dir, tracker, dataset))
  except ValueError as e:
    return {'error': str(e)}


def score_tracker(sequences, results_dir, tracker, dataset, protocol, compat=False):
  """TrackerResult for `<results_dir>/<tracker>/<dataset>/<sequence>.txt` over `sequences`.

  A sequence the tracking report lists as failed, with no result file, fails as 'not tracked: why'.
  """
  tracking = tracking_report(results_dir, tracker, dataset)
  not_tracked = (tracking or {}).get('failed', {})
  scores, failed = {}, {}
  for seq in sequences:
    path = result_path(results_dir, tracker, dataset, seq.name)
    try:
      scores[seq.name] = score_sequence(path, seq, protocol, compat)
    except SequenceFailure as e:
      missing = seq.name in not_tracked and not os.path.exists(path)
      failed[seq.name] = f'not tracked: {not_tracked[seq.name]}' if missing else str(e)
  return TrackerResult(scores, failed, tracking)


def result_format(scores):
  """'int' when every scored file holds whole numbers (published raw results), 'float', 'mixed' or None."""
  kinds = {'int' if s.integer else 'float' for s in scores.values()}
  return kinds.pop() if len(kinds) == 1 else ('mixed' if kinds else None)


def tracker_metrics(result, protocol, names=None):
  """The metrics.json entry of one TrackerResult (restricted to sequence `names` when given)."""
  wanted = set(result.scores) | set(result.failed) if names is None else set(names)
  scores = {n: s for n, s in result.scores.items() if n in wanted}
  out = M.summarize([s.curves for s in scores.values()], protocol)
  # VL-SOT500_Accuracy_Evaluation.py: 'Mean ACC' = mean over sequences of the per-sequence ACC
  out['macc'] = (float(np.mean([s.accuracy for s in scores.values()]))
                 if protocol == 'vlsot' and scores else None)
  out['frames'] = int(sum(s.frames for s in scores.values()))
  out['sequences'] = len(scores)
  out['failed'] = {n: r for n, r in result.failed.items() if n in wanted}
  out['protocol'] = protocol
  out['result_format'] = result_format(scores)
  if result.tracking is not None:
    out['tracking'] = ({k: {n: v for n, v in result.tracking[k].items() if n in wanted}
                        for k in ('failed', 'bad_frames')}
                       if 'error' not in result.tracking else dict(result.tracking))
  return out


def score_trackers(sequences, results_dir, trackers, dataset, protocol, compat=False):
  """{tracker: TrackerResult}; trackers None = every folder under results_dir, protocol None = the
  dataset's default."""
  protocol = protocol or default_protocol(dataset)
  if protocol not in M.PROTOCOLS:
    raise ValueError(f'unknown protocol {protocol!r}; expected one of {M.PROTOCOLS}')
  trackers = trackers or list_trackers(results_dir)
  if not trackers:
    raise ValueError(f'no tracker folders under {results_dir}')
  return {t: score_tracker(sequences, results_dir, t, dataset, protocol, compat) for t in trackers}


def evaluate(sequences, results_dir, trackers, dataset, protocol, compat=False):
  """{tracker: {dataset: metrics}} (see the module docstring); trackers/protocol None: the defaults."""
  protocol = protocol or default_protocol(dataset)
  results = score_trackers(sequences, results_dir, trackers, dataset, protocol, compat)
  return {t: {dataset: tracker_metrics(r, protocol)} for t, r in results.items()}
