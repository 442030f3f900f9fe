"""Per-frame errors and per-sequence curves of the published OPE protocols, on arrays.

Protocols (docs/design.md §4):
  'pytracking': visionml/pytracking pytracking/analysis/extract_results.py (calc_seq_err_robust,
                extract_results) + plot_results.py (get_auc_curve, get_prec_curve).
  'ostrack':    botaoye/OSTrack lib/test/analysis/extract_results.py + plot_results.py: the same code,
                except that a ground-truth frame is valid when w, h > 0 (not all four numbers).
  'vlsot':      the VL-SOT500 toolkit (983632847/Awesome-Multimodal-Object-Tracking,
                MMOT_Evaluation_Toolkit: got10k/experiments/vltot230.py report/_calc_metrics/_calc_curves,
                got10k/utils/metrics.py, VL-SOT500_Accuracy_Evaluation.py for mACC).
Boxes are (x, y, w, h) float pixels, [N, 4]. Nothing here reads files.
"""

import numpy as np

from cost_jax.evaluation.results_io import SequenceFailure, check_boxes, frame_list, is_absent_row

PROTOCOLS = ('pytracking', 'ostrack', 'vlsot')

# torch.arange(0.0, 1.0 + 0.05, 0.05, dtype=torch.float64) of extract_results, bit for bit (entries 13
# and 15 are one ulp above k*0.05; an IoU of exactly 0.75 is not "> 0.75" there).
OVERLAP_THRESHOLDS = np.array([
    0.0, 0.05, 0.1, 0.15000000000000002, 0.2, 0.25, 0.30000000000000004, 0.35000000000000003, 0.4,
    0.45, 0.5, 0.55, 0.6000000000000001, 0.6500000000000001, 0.7000000000000001, 0.7500000000000001,
    0.8, 0.8500000000000001, 0.9, 0.9500000000000001, 1.0])
CENTER_THRESHOLDS = np.arange(0, 51, dtype=np.float64)  # torch.arange(0, 51): 0..50 px
NORM_CENTER_THRESHOLDS = np.arange(0, 51, dtype=np.float64) / 100.0  # torch.arange(0, 51) / 100
VLSOT_OVERLAP_THRESHOLDS = np.linspace(0, 1, 21)  # vltot230.py _calc_curves: np.linspace(0, 1, nbins_iou=21)
PRECISION_INDEX = 20  # P at 20 px (get_prec_curve: prec_curve[:, 20]); P_norm at 0.20 likewise

# Dataset keys of the originals. pytracking/OSTrack's LaSOT test set is 'lasot' (which gets the
# invisible-frame rule below); LaSOT-ext is 'lasot_extension_subset' (which does not).
ORIGINAL_KEY = {'lasot': 'lasot', 'lasot_ext': 'lasot_extension_subset', 'tnl2k': 'tnl2k',
                'otb99_lang': 'otb', 'got10k': 'got10k'}
# Datasets whose original Sequence passes target_visible (lasotdataset.py, lasotextensionsubsetdataset.py:
# visible = no full occlusion and not out of view); the others pass None. The synthetic set has the
# LaSOT annotation files, so it uses them too.
USES_VISIBILITY = ('lasot', 'lasot_extension_subset', 'synthetic')


def original_key(dataset):
  """pytracking/OSTrack's `seq.dataset` string for one of our reader names."""
  return ORIGINAL_KEY.get(dataset, dataset)


def iou(pred, gt):
  """IoU [N] of boxes [N, 4], as calc_iou_overlap computes it.

  Its -1/+1 terms cancel, so this is the continuous formula; the operations keep the original's order
  so that rounding (an IoU of 1 + 1 ulp on a perfect float box, counted above the 1.0 threshold) is the
  same bit for bit.
  """
  tl = np.maximum(pred[:, :2], gt[:, :2])
  br = np.minimum(pred[:, :2] + pred[:, 2:] - 1.0, gt[:, :2] + gt[:, 2:] - 1.0)
  inter = np.clip(br - tl + 1.0, 0, None).prod(axis=1)  # sz = (br - tl + 1).clamp(0); sz.prod
  union = pred[:, 2:].prod(axis=1) + gt[:, 2:].prod(axis=1) - inter
  with np.errstate(invalid='ignore', divide='ignore'):
    return inter / union


def center_error(pred, gt, normalized=False):
  """Centre distance [N] in pixels (or in units of the ground-truth w, h), as calc_err_center computes it.

  Centres x + 0.5 (w - 1): the -0.5 is common to both boxes, so this is the continuous distance,
  with the original's rounding.
  """
  c_pred = pred[:, :2] + 0.5 * (pred[:, 2:] - 1.0)
  c_gt = gt[:, :2] + 0.5 * (gt[:, 2:] - 1.0)
  with np.errstate(invalid='ignore', divide='ignore'):
    if normalized:
      c_pred, c_gt = c_pred / gt[:, 2:], c_gt / gt[:, 2:]  # pred_center / anno_wh, anno_center / anno_wh
    return np.sqrt(((c_pred - c_gt) ** 2).sum(axis=1))


def replace_zero_size(pred, gt):
  """calc_seq_err_robust: a prediction with w or h == 0 takes the previous (already replaced) one.

  Runs on the raw predictions, before frame 1 is set to the ground truth, frame by frame from frame 2
  ('for i in range(1, N)'), skipping frames whose ground truth has a NaN.
  """
  pred = pred.copy()
  n = min(len(pred), len(gt))
  for i in range(1, n):
    if (pred[i, 2:] == 0.0).any() and not np.isnan(gt[i]).any():
      pred[i] = pred[i - 1]
  return pred


def fit_length(pred, n, dataset_key, compat):
  """Length rule. Strict (default): a mismatch fails the sequence.

  compat (calc_seq_err_robust): a longer prediction is truncated; a shorter one is zero-padded, except
  for dataset 'lasot', where it raises ('Mis-match in tracker prediction and GT lengths').
  """
  if len(pred) == n:
    return pred
  message = f'result has {len(pred)} lines, ground truth {n} frames'
  if not compat:
    raise SequenceFailure(message)
  if len(pred) > n:
    return pred[:n]
  if dataset_key == 'lasot':
    raise SequenceFailure(message + ' (shorter results fail for lasot in the originals too)')
  return np.concatenate([pred, np.zeros((n - len(pred), 4))], axis=0)


def toolkit_frame_errors(pred, gt, visible, dataset_key, protocol, compat=False):
  """calc_seq_err_robust for 'pytracking' / 'ostrack'.

  Args:
    pred: [M, 4] predictions; gt: [N, 4] ground truth; visible: [N] bool or None (the original's
      target_visible); dataset_key: the original's dataset string ('lasot', 'otb', ...).
  Returns:
    overlap [N] (-1 where invalid), center [N] px (inf where invalid), norm_center [N] (-1 where invalid:
    a hit at every threshold; inf where invisible for 'lasot'), valid [N] bool.
  """
  check_boxes(pred)  # 'Error: Invalid results': NaN or w/h < 0
  if np.isnan(gt).any():  # 'Warning: NaNs in annotation' (raised for every dataset but 'uav')
    raise SequenceFailure(f'NaN in the ground truth at frames {frame_list(np.isnan(gt).any(axis=1))}')
  pred = replace_zero_size(pred, gt)
  pred = fit_length(pred, len(gt), dataset_key, compat)
  pred[0] = gt[0]  # pred_bb[0, :] = anno_bb[0, :]
  if protocol == 'pytracking':
    valid = (gt > 0.0).sum(axis=1) == 4  # all four numbers > 0
  elif protocol == 'ostrack':
    valid = (gt[:, 2:] > 0.0).sum(axis=1) == 2  # w, h > 0
  else:
    raise ValueError(f'protocol {protocol!r} has no frame validity rule')
  if visible is not None:
    valid = valid & visible
  overlap = iou(pred, gt)
  center = center_error(pred, gt)
  norm_center = center_error(pred, gt, normalized=True)
  center[~valid] = np.inf  # err_center[~valid] = Inf: a miss
  norm_center[~valid] = -1.0  # err_center_normalized[~valid] = -1: a hit
  overlap[~valid] = -1.0  # err_overlap[~valid] = -1: a miss
  if dataset_key == 'lasot' and visible is not None:
    # LaSOT only: invisible frames are misses for both precisions
    norm_center[~visible] = np.inf
    center[~visible] = np.inf
  if np.isnan(overlap).any():
    raise SequenceFailure('NaN in the computed overlap')  # 'Nans in calculated overlap'
  return overlap, center, norm_center, valid


def toolkit_curves(overlap, center, norm_center):
  """extract_results: success (IoU strictly >), precision (<= px) and norm precision (<=) curves.

  The denominator is the sequence length (exclude_invalid_frames=False), so invalid frames count.
  Stored as float32 like ave_success_rate_plot_*: count.float() / seq_length.
  """
  n = np.float32(len(overlap))
  rate = lambda hits: (hits.sum(axis=0).astype(np.float32) / n)
  return {
      'success': rate(overlap[:, None] > OVERLAP_THRESHOLDS[None, :]),
      'precision': rate(center[:, None] <= CENTER_THRESHOLDS[None, :]),
      'norm_precision': rate(norm_center[:, None] <= NORM_CENTER_THRESHOLDS[None, :]),
  }


def vlsot_gt(gt):
  """The toolkit reads groundtruth_rect.txt raw: an absent frame is 0,0,0,0 (a reader's NaN rows too)."""
  return np.nan_to_num(np.asarray(gt, dtype=np.float64), nan=0.0)


def vlsot_iou(pred, gt):
  """got10k rect_iou: inter / (union + eps), clipped to [0, 1]."""
  x1 = np.maximum(pred[:, 0], gt[:, 0])
  y1 = np.maximum(pred[:, 1], gt[:, 1])
  x2 = np.minimum(pred[:, 0] + pred[:, 2], gt[:, 0] + gt[:, 2])
  y2 = np.minimum(pred[:, 1] + pred[:, 3], gt[:, 1] + gt[:, 3])
  inter = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
  union = pred[:, 2:].prod(axis=1) + gt[:, 2:].prod(axis=1) - inter
  return np.clip(inter / (union + np.finfo(float).eps), 0.0, 1.0)


def vlsot_center_error(pred, gt, normalized=False):
  """got10k center_error / center_error_norm, with their (w - 1)/2 centres and 1e-16 guard.

  The -1 terms cancel except against an absent 0,0,0,0 ground truth, whose 'centre' is (-0.5, -0.5):
  the toolkit compares predictions with that point, so absent frames are misses unless the predicted
  centre lies within the threshold of it.
  """
  c1 = pred[:, :2] + (pred[:, 2:] - 1) / 2
  c2 = gt[:, :2] + (gt[:, 2:] - 1) / 2
  if normalized:
    c1 = c1 / (gt[:, 2:] + 1e-16)
    c2 = c2 / (gt[:, 2:] + 1e-16)
  return np.sqrt(np.sum((c1 - c2) ** 2, axis=-1))


def vlsot_complete_iou(pred, gt):
  """got10k rect_iou_complete (CIoU = IoU - d²/c² - alpha v), clamped to [-1, 1] then clipped to [0, 1].

  NaN (an absent 0,0,0,0 ground truth makes atan(0/0)) stays NaN and is a miss at every threshold.
  """
  with np.errstate(invalid='ignore', divide='ignore'):
    w1, h1, w2, h2 = pred[:, 2], pred[:, 3], gt[:, 2], gt[:, 3]
    cx1, cy1 = pred[:, 0] + w1 / 2, pred[:, 1] + h1 / 2
    cx2, cy2 = gt[:, 0] + w2 / 2, gt[:, 1] + h2 / 2
    inter_w = np.minimum(cx1 + w1 / 2, cx2 + w2 / 2) - np.maximum(cx1 - w1 / 2, cx2 - w2 / 2)
    inter_h = np.minimum(cy1 + h1 / 2, cy2 + h2 / 2) - np.maximum(cy1 - h1 / 2, cy2 - h2 / 2)
    inter = np.clip(inter_w, 0, None) * np.clip(inter_h, 0, None)
    c_w = np.clip(np.maximum(cx1 + w1 / 2, cx2 + w2 / 2) - np.minimum(cx1 - w1 / 2, cx2 - w2 / 2), 0, None)
    c_h = np.clip(np.maximum(cy1 + h1 / 2, cy2 + h2 / 2) - np.minimum(cy1 - h1 / 2, cy2 - h2 / 2), 0, None)
    u = ((cx2 - cx1) ** 2 + (cy2 - cy1) ** 2) / (c_w ** 2 + c_h ** 2)
    iou_ = inter / (w1 * h1 + w2 * h2 - inter)
    v = (4 / np.pi ** 2) * (np.arctan(w2 / h2) - np.arctan(w1 / h1)) ** 2
    alpha = v / (1 - iou_ + v + np.finfo(float).eps)
    ciou = iou_ - u - alpha * v
    return np.clip(np.clip(ciou, -1.0, 1.0), 0.0, 1.0)  # torch.clamp keeps NaN, np.clip too


def vlsot_fit_length(pred, gt, compat):
  """vltot230.py report: boxes[0] = anno[0] first; on a length mismatch it prints 'Length Error!' and
  cuts both series to the shorter length (compat). Strict: the sequence fails."""
  pred = pred.copy()
  pred[0] = gt[0]
  if len(pred) != len(gt):
    if not compat:
      raise SequenceFailure(f'result has {len(pred)} lines, ground truth {len(gt)} frames')
    n = min(len(pred), len(gt))
    pred, gt = pred[:n], gt[:n]
  return pred, gt


def vlsot_curves(pred, gt, compat=False):
  """vltot230.py _calc_metrics + _calc_curves for one sequence: success (21), precision (51),
  complete success (21) and normalised precision (51) curves, float64 means over frames."""
  # Not in the toolkit (NaN would score as a miss): docs/design.md §4 makes it an error.
  check_boxes(pred)
  pred, gt = vlsot_fit_length(pred, vlsot_gt(gt), compat)
  with np.errstate(invalid='ignore', divide='ignore'):
    ious = vlsot_iou(pred, gt)
    center = vlsot_center_error(pred, gt)
    ciou = vlsot_complete_iou(pred, gt)
    norm_center = vlsot_center_error(pred, gt, normalized=True)
  return {
      'success': np.mean(ious[:, None] > VLSOT_OVERLAP_THRESHOLDS[None, :], axis=0),
      'precision': np.mean(center[:, None] <= CENTER_THRESHOLDS[None, :], axis=0),
      'complete_success': np.mean(ciou[:, None] > VLSOT_OVERLAP_THRESHOLDS[None, :], axis=0),
      'norm_precision': np.mean(norm_center[:, None] <= NORM_CENTER_THRESHOLDS[None, :], axis=0),
  }


def accuracy_iou(pred, gt):
  """VL-SOT500_Accuracy_Evaluation.py iou: continuous, 0 without overlap, no eps; areas as
  (x + w - x) * (y + h - y), in the script's order (same rounding)."""
  x0, y0, x1, y1 = pred[0], pred[1], pred[0] + pred[2], pred[1] + pred[3]
  gx0, gy0, gx1, gy1 = gt[0], gt[1], gt[0] + gt[2], gt[1] + gt[3]
  ox0, oy0, ox1, oy1 = max(x0, gx0), max(y0, gy0), min(x1, gx1), min(y1, gy1)
  if ox1 - ox0 <= 0 or oy1 - oy0 <= 0:
    return 0
  inter = (ox1 - ox0) * (oy1 - oy0)
  return inter / ((x1 - x0) * (y1 - y0) + (gx1 - gx0) * (gy1 - gy0) - inter)


def vlsot_accuracy(rows, gt):
  """Mean accuracy of one sequence (VL-SOT500_Accuracy_Evaluation.py eval).

  rows: the result file's parsed lines (tuples; () for an empty line). A frame whose ground truth is
  0,0,0,0 (absent) scores 1 only for an absent prediction (empty line or a single 0), else 0; a present
  frame scores the IoU of a box line, 0 for an absent prediction. Frame 1 is not replaced by the ground
  truth here. zip() pairs the two series up to the shorter one. COST never predicts absence, so it
  scores 0 on every absent frame.
  """
  gt = vlsot_gt(gt)
  scores = []
  for row, box in zip(rows, gt):
    exist = not (box[0] == 0 and box[1] == 0 and box[2] == 0 and box[3] == 0)
    if not exist:
      scores.append(float(is_absent_row(row)))
    else:
      scores.append(accuracy_iou(row, box) if len(row) > 1 else 0.0)
  return float(np.mean(scores))


def summarize(curves, protocol):
  """Dataset metrics from per-sequence curves (a list of dicts); fractions in [0, 1].

  pytracking/ostrack (plot_results get_auc_curve / get_prec_curve): curves averaged over sequences,
  AUC = mean of the success curve, P = precision[20], P_norm = norm_precision[20].
  vlsot (vltot230.py report): the same averages, plus normalised-precision AUC (mean over its 51
  thresholds, the toolkit's 'precision_norm_score') and complete-IoU AUC; P_norm@0.20 is the same
  curve at index 20 (the toolkit's per-sequence precision_norm_score).
  """
  if not curves:
    return {'auc': None, 'precision': None, 'norm_precision': None, 'np_auc': None, 'ciou_auc': None}
  mean = mean_curves(curves)
  out = {
      'auc': float(np.mean(mean['success'])),
      'precision': float(mean['precision'][PRECISION_INDEX]),
      'norm_precision': float(mean['norm_precision'][PRECISION_INDEX]),
      'np_auc': None,
      'ciou_auc': None,
  }
  if protocol == 'vlsot':
    out['np_auc'] = float(np.mean(mean['norm_precision']))
    out['ciou_auc'] = float(np.mean(mean['complete_success']))
  return out


def mean_curves(curves):
  """Per-key mean over sequences of per-sequence curves (what the plots draw)."""
  return {k: np.mean(np.stack([c[k].astype(np.float64) for c in curves]), axis=0) for k in curves[0]}
