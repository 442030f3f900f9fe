"""Tracker: hand-checked post-processing, then the real tiny model (jit, batching, trajectories)."""

import numpy as np
import pytest

from cost_jax import tracker
from input_pipeline import crops


# ---------------------------------------------------------------- post-processing, by hand

def test_hann_window_is_outer_hanning_row_major():
  np.testing.assert_array_equal(tracker.hann_window(3), [0, 0, 0, 0, 1, 0, 0, 0, 0])
  w = tracker.hann_window(20).reshape(20, 20)
  np.testing.assert_allclose(w[4, 7], np.hanning(20)[4] * np.hanning(20)[7], rtol=1e-6)
  assert w.dtype == np.float32


def test_select_box_window_overrides_a_stronger_edge_logit():
  hann = tracker.hann_window(3)
  boxes = np.arange(36, dtype=np.float32).reshape(9, 4) / 36
  logits = np.zeros(9, np.float32)
  logits[0] = 2.0  # sigmoid 0.8808 at the corner
  box, score = tracker.select_box({'logits': logits, 'boxes': boxes}, hann, 0.49)
  np.testing.assert_allclose(score, 0.51 * 0.5 + 0.49, rtol=1e-6)  # centre: 0.745 > 0.51 * 0.8808
  np.testing.assert_array_equal(box, boxes[4])
  box, score = tracker.select_box({'logits': logits, 'boxes': boxes}, hann, 0.0)
  np.testing.assert_allclose(score, 1 / (1 + np.exp(-2.0)), rtol=1e-6)
  np.testing.assert_array_equal(box, boxes[0])


def test_select_box_obj_head_takes_its_one_box():
  boxes = np.array([[0.5, 0.4, 0.1, 0.2]], np.float32)
  box, _ = tracker.select_box({'boxes': boxes}, tracker.hann_window(20), 0.49)
  np.testing.assert_array_equal(box, boxes[0])


@pytest.mark.parametrize('predicted, expected', [
    ((95, 45, 20, 10), (90, 45, 20, 10)),  # centre (105, 50) clipped to the image (100, 50)
    ((10, 10, 0.2, 0.5), (9.6, 9.75, 1, 1)),  # w, h floored at min_size_px = 1, centre kept
    ((0, 0, 300, 10), (50, 0, 100, 10)),  # w capped at the image width, centre (150, 5) -> 100
    ((-30, -8, 20, 10), (-10, -5, 20, 10)),  # centre (-20, -3) -> (0, 0): negative x, y are legal
])
def test_update_box_clips_centre_and_size(predicted, expected):
  box = tracker.update_box((40, 20, 10, 10), predicted, (100, 50), 1.0, 1.0)
  np.testing.assert_allclose(box, expected, atol=1e-5)


def test_update_box_size_rate():
  box = tracker.update_box((0, 0, 10, 20), (40, 30, 20, 40), (100, 100), 0.5, 1.0)
  np.testing.assert_allclose(box, (42.5, 35, 15, 30), atol=1e-5)  # centre (50, 50), size halfway


def test_padding_shapes():
  assert tracker.padded_shape([(100, 30), (64, 130)], 64) == (128, 192)
  frame = np.full((2, 3, 3), 7, np.uint8)
  padded = tracker.pad_frame(frame, (4, 5))
  assert padded.shape == (4, 5, 3) and padded[:2, :3].min() == 7 and padded.sum() == 7 * 18
  np.testing.assert_array_equal(tracker.image_wh(padded), (5, 4))


def test_crop_valid_ignores_zero_padding():
  rng = np.random.default_rng(0)
  frame = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
  window = np.array([50.0, 10.0, 40.0], np.float32)  # leaves the frame on the right and the top
  wh = tracker.image_wh(frame)
  small = np.asarray(tracker.crop_valid(frame, wh, window, 24))
  padded = np.asarray(tracker.crop_valid(tracker.pad_frame(frame, (64, 128)), wh, window, 24))
  np.testing.assert_array_equal(small, padded)
  reference = np.asarray(crops.crop_jax(frame, window, 24))  # the shared crop, float32 mean
  assert np.abs(small.astype(int) - reference).max() <= 1
