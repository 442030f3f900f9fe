"""Crop geometry: hand-computed windows, exact inverses, the half-pixel map, TF == JAX, token centres."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from input_pipeline import crops


@pytest.mark.parametrize('box,factor,rule,side', [
    ((100, 50, 20, 20), 4.0, 'transt', 80.0),  # square: both rules give f*w
    ((100, 50, 20, 20), 4.0, 'pytracking', 80.0),
    ((10, 20, 40, 10), 4.0, 'transt', np.sqrt((40 + 75) * (10 + 75))),  # (f-1)(w+h)/2 = 75
    ((10, 20, 40, 10), 4.0, 'pytracking', 4.0 * 20.0),  # f sqrt(400)
    ((10, 20, 40, 10), 2.0, 'transt', np.sqrt(65.0 * 35.0)),  # template f=2: pad 25
    ((10, 20, 40, 10), 2.0, 'pytracking', 40.0),
    ((0, 0, 6, 6), 4.0, 'transt', 64.0),  # 24 px floored at min_side
])
def test_crop_window_hand_computed(box, factor, rule, side):
  window = crops.crop_window(np.array(box, np.float64), factor, 64.0 if factor == 4 else 32.0, rule)
  x, y, w, h = box
  np.testing.assert_allclose(window, [x + w / 2, y + h / 2, side], rtol=1e-12)


def test_crop_window_jnp_matches_numpy():
  boxes = np.array([[3.5, 7.25, 40, 10], [100, 50, 5, 9]], np.float32)
  for rule in ('transt', 'pytracking'):
    np.testing.assert_allclose(jax.jit(lambda b: crops.crop_window(b, 4.0, 64.0, rule))(jnp.asarray(boxes)),
                               crops.crop_window(boxes, 4.0, 64.0, rule), rtol=1e-6)


def test_box_crop_round_trip():
  rng = np.random.default_rng(0)
  boxes = np.concatenate([rng.uniform(-50, 1200, (64, 2)), rng.uniform(1, 300, (64, 2))], axis=1)
  windows = crops.crop_window(boxes + rng.normal(0, 5, boxes.shape), 4.0, 64.0)
  back = crops.crop_to_box(crops.box_to_crop(boxes, windows, 256), windows, 256)
  assert np.abs(back - boxes).max() < 1e-9  # exact up to float rounding (spec: 0.5 px)
  back32 = crops.crop_to_box(crops.box_to_crop(jnp.asarray(boxes, jnp.float32), jnp.asarray(windows, jnp.float32)),
                             jnp.asarray(windows, jnp.float32))
  assert np.abs(np.asarray(back32) - boxes).max() < 0.5


def test_target_centred_without_jitter():
  box = np.array([37.0, 41.0, 9.0, 5.0])
  window = crops.crop_window(box, 4.0, 64.0)
  np.testing.assert_allclose(crops.box_to_crop(box, window, 64)[:2], [0.5, 0.5])
  frame = np.zeros((80, 120, 3), np.uint8)
  frame[41:46, 37:46] = 255  # exactly the box
  crop = np.asarray(crops.crop_jax(frame, window, 64)).astype(np.float64)[..., 0]
  crop -= crop.min()
  ys, xs = np.mgrid[0:64, 0:64] + 0.5
  centroid = (np.sum(xs * crop) / crop.sum(), np.sum(ys * crop) / crop.sum())
  np.testing.assert_allclose(centroid, (32.0, 32.0), atol=0.05)


def test_half_pixel_map_on_a_ramp():
  """On frame value = 2 x (column index), output u equals 2 (x0 + (u + 0.5) side / S - 0.5)."""
  w = 100
  frame = np.broadcast_to((2 * np.arange(w))[None, :, None], (60, w, 3)).astype(np.uint8)
  window = np.array([50.3, 30.0, 40.0])
  out = np.asarray(crops.crop_jax_float(frame, window, 16, fill=np.zeros(3)))
  expected = 2 * (50.3 - 20.0 + (np.arange(16) + 0.5) * 40.0 / 16 - 0.5)
  np.testing.assert_allclose(out[8, :, 0], expected, atol=1e-3)


def test_outside_image_is_channel_mean():
  frame = np.zeros((20, 30, 3), np.uint8)
  frame[..., 0], frame[..., 1], frame[..., 2] = 10, 200, 90
  frame[:10, :, 1] = 100  # green mean 150
  out = np.asarray(crops.crop_jax(frame, np.array([-100.0, -100.0, 50.0]), 8))
  np.testing.assert_array_equal(out, np.broadcast_to([10, 150, 90], out.shape))


def test_tf_and_jax_crops_agree():
  rng = np.random.default_rng(1)
  frame = rng.integers(0, 256, (47, 61, 3), dtype=np.uint8)
  windows = [(30.0, 20.0, 40.0), (0.0, 0.0, 33.3), (60.7, 46.2, 90.0), (12.25, 30.5, 7.0), (-20, 10, 30)]
  jit_crop = jax.jit(crops.crop_jax, static_argnums=2)
  for window in windows:
    for size in (16, 31):
      a = np.asarray(jit_crop(frame, np.array(window, np.float32), size)).astype(int)
      b = crops.crop_tf(frame, np.array(window, np.float32), size).numpy().astype(int)
      assert np.abs(a - b).max() <= 1, (window, size)


def test_crop_jax_vmaps():
  """vmapped crops equal one-by-one crops.

  The float crop is compared by norm (vmap may fuse the bilinear arithmetic differently, which moves
  the last bit); the uint8 crop may then differ by one grey level only where the float value sits on
  a rounding boundary (x.5 within 1e-3), never elsewhere.
  """
  rng = np.random.default_rng(2)
  frames = rng.integers(0, 256, (3, 24, 32, 3), dtype=np.uint8)
  windows = np.array([[10, 10, 20], [16, 12, 30], [0, 5, 12]], np.float32)
  batched_float = np.asarray(jax.vmap(lambda f, w: crops.crop_jax_float(f, w, 8))(frames, windows))
  batched = np.asarray(jax.vmap(lambda f, w: crops.crop_jax(f, w, 8))(frames, windows)).astype(int)
  for i in range(3):
    single_float = np.asarray(crops.crop_jax_float(frames[i], windows[i], 8))
    assert np.linalg.norm(batched_float[i] - single_float) <= 1e-6 * np.linalg.norm(single_float)
    single = np.asarray(crops.crop_jax(frames[i], windows[i], 8)).astype(int)
    differ = batched[i] != single
    assert np.abs(batched[i] - single).max() <= 1
    on_boundary = np.abs(single_float - np.floor(single_float) - 0.5) <= 1e-3
    assert np.all(on_boundary[differ]), np.argwhere(differ & ~on_boundary)


def _model_cfg(mode, size, grid=20):
  return ml_collections.ConfigDict({'search_size': size,
                                    'token': {'mode': mode, 'grid': grid, 'kernel': 5, 'dilation': 3}})


def test_token_centers_every_mode():
  res = crops.token_centers(_model_cfg('resample', 256))
  assert res.shape == (400, 2)
  np.testing.assert_allclose(res[:3], [[6.4, 6.4], [19.2, 6.4], [32.0, 6.4]], rtol=1e-6)  # row-major
  np.testing.assert_allclose(res[20], [6.4, 19.2], rtol=1e-6)
  np.testing.assert_allclose(res[-1], [249.6, 249.6], rtol=1e-6)
  dil = crops.token_centers(_model_cfg('valid_dilated', 256))
  np.testing.assert_allclose(dil[[0, 19, 399]], [[52, 52], [204, 52], [204, 204]])  # central 152 px
  s2 = crops.token_centers(_model_cfg('stride2_320', 320))
  np.testing.assert_allclose(s2[[0, 1, 399]], [[12, 12], [28, 12], [316, 316]])  # cell 2k+1 of 40
  tiny = crops.token_centers(_model_cfg('resample', 160))
  np.testing.assert_allclose(tiny[:2, 0], [4.0, 12.0])  # 20x20 map: the stride-8 cell centres
  with pytest.raises(ValueError, match='token.grid'):
    crops.token_centers(_model_cfg('valid_dilated', 160))
