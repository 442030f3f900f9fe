"""Box conversions, IoU and GIoU against hand-computed values and torchvision."""

import numpy as np
import torch
import torchvision

from cost_jax import box_ops


def test_conversions_hand_values_and_round_trips():
  cxcywh = np.array([[5.0, 6.0, 4.0, 2.0]])
  np.testing.assert_allclose(box_ops.cxcywh_to_xyxy(cxcywh), [[3.0, 5.0, 7.0, 7.0]])
  np.testing.assert_allclose(box_ops.xyxy_to_cxcywh([[3.0, 5.0, 7.0, 7.0]]), cxcywh)
  np.testing.assert_allclose(box_ops.xywh_to_xyxy([[3.0, 5.0, 4.0, 2.0]]), [[3.0, 5.0, 7.0, 7.0]])
  rng = np.random.default_rng(0)
  boxes = rng.uniform(0, 10, (3, 5, 4)).astype(np.float32)
  np.testing.assert_allclose(box_ops.xyxy_to_xywh(box_ops.xywh_to_xyxy(boxes)), boxes, atol=1e-5)
  round_trip = box_ops.xyxy_to_cxcywh(box_ops.cxcywh_to_xyxy(boxes))
  np.testing.assert_allclose(round_trip, boxes, atol=1e-5)


def test_iou_and_giou_hand_values():
  a = np.array([[0, 0, 2, 2], [0, 0, 1, 1], [0, 0, 1, 1]], np.float32)
  b = np.array([[1, 1, 3, 3], [2, 0, 3, 1], [0, 0, 1, 1]], np.float32)
  # overlap 1 of union 7; disjoint (enclosing 3, union 2); identical.
  np.testing.assert_allclose(box_ops.iou(a, b), [1 / 7, 0, 1], rtol=1e-6)
  np.testing.assert_allclose(box_ops.generalized_iou(a, b), [1 / 7 - 2 / 9, -1 / 3, 1], rtol=1e-6)
  np.testing.assert_allclose(box_ops.area(a), [4, 1, 1])


def test_giou_matches_torchvision():
  rng = np.random.default_rng(1)
  lo = rng.uniform(0, 1, (64, 2))
  a = np.concatenate([lo, lo + rng.uniform(0.01, 1, (64, 2))], -1).astype(np.float32)
  lo = rng.uniform(0, 1, (64, 2))
  b = np.concatenate([lo, lo + rng.uniform(0.01, 1, (64, 2))], -1).astype(np.float32)
  ref = torch.diag(torchvision.ops.generalized_box_iou(torch.tensor(a), torch.tensor(b))).numpy()
  np.testing.assert_allclose(box_ops.generalized_iou(a, b), ref, atol=1e-6)
  ref_iou = torch.diag(torchvision.ops.box_iou(torch.tensor(a), torch.tensor(b))).numpy()
  np.testing.assert_allclose(box_ops.iou(a, b), ref_iou, atol=1e-6)
