"""Detection losses and CoA against hand-computed values and a plain numpy reference."""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from cost_jax import losses


def _grid_centers(n):
  """[n*n, 2] row-major centres of an n x n grid on the unit square."""
  c = (np.arange(n) + 0.5) / n
  xs, ys = np.meshgrid(c, c)
  return np.stack([xs.ravel(), ys.ravel()], -1).astype(np.float32)


def test_positive_tokens_inside_and_nearest():
  centers = _grid_centers(4)  # centres at 0.125, 0.375, 0.625, 0.875
  boxes = np.array([[0.5, 0.5, 0.5, 0.5],     # covers the middle 2x2 tokens (5, 6, 9, 10)
                    [0.40, 0.15, 0.05, 0.05]],  # tiny box between centres: nearest only (token 1)
                   np.float32)
  pos = np.asarray(losses.positive_tokens(centers, boxes))
  assert sorted(np.flatnonzero(pos[0])) == [5, 6, 9, 10]
  assert list(np.flatnonzero(pos[1])) == [1]


def test_classification_loss_hand_value():
  logits = np.array([[2.0, -1.0, 0.0]], np.float32)
  labels = np.array([[1.0, 0.0, 0.0]], np.float32)
  sp = lambda x: math.log1p(math.exp(x))  # softplus; BCE(l, 1) = sp(-l), BCE(l, 0) = sp(l)
  expected = (sp(-2.0) + 0.25 * sp(-1.0) + 0.25 * sp(0.0)) / 1.5
  got = losses.classification_loss(logits, labels, neg_weight=0.25)
  np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_box_losses_hand_value_and_global_normaliser():
  gt = np.array([[0.5, 0.5, 0.2, 0.2], [0.3, 0.3, 0.2, 0.2]], np.float32)
  pred = np.tile(gt[:, None, :], (1, 3, 1))
  pred[0, 0] = [0.6, 0.5, 0.2, 0.2]  # shifted by half its width: IoU 1/3, GIoU 1/3 - 0
  positives = np.array([[1, 0, 0], [1, 1, 0]], np.float32)  # 3 positives over the batch
  l1, giou = losses.box_losses(pred, gt, positives)
  np.testing.assert_allclose(l1, 0.1 / 3, rtol=1e-5)
  np.testing.assert_allclose(giou, (1 - 1 / 3) / 3, rtol=1e-5)


def test_localisation_loss_hand_value():
  """-log(softmax mass on the positives), averaged over rows: a look-alike as strong as the target
  costs log 2 whatever the negative weight, a clear winner costs ~0."""
  logits = np.array([[3.0, 3.0, -20.0, -20.0], [1.0, 2.0, 0.0, -1.0]], np.float32)
  labels = np.array([[1, 0, 0, 0], [0, 1, 1, 0]], np.float32)
  expected_0 = -math.log(math.exp(3) / (2 * math.exp(3) + 2 * math.exp(-20)))
  mass = (math.exp(2) + math.exp(0)) / (math.exp(1) + math.exp(2) + math.exp(0) + math.exp(-1))
  got = float(losses.localisation_loss(logits, labels))
  assert got == pytest.approx((expected_0 - math.log(mass)) / 2, rel=1e-5)
  assert expected_0 == pytest.approx(math.log(2), rel=1e-6)
  assert float(losses.localisation_loss(np.array([[9.0, -9.0]]), np.array([[1.0, 0.0]]))) < 1e-6


def test_detection_losses_obj_head_uses_the_single_box():
  gt = np.array([[0.5, 0.5, 0.2, 0.2]], np.float32)
  out = {'boxes': np.array([[[0.5, 0.6, 0.2, 0.2]]], np.float32)}
  got = losses.detection_losses(out, gt, _grid_centers(4), 0.0625)
  assert float(got['cls']) == 0.0 and float(got['loc']) == 0.0
  np.testing.assert_allclose(got['l1'], 0.1, rtol=1e-5)


def numpy_coa(v, t, logit_scale, text_key, sequence_key):
  """Row-by-row reference of docs/design.md §3's CoA, float64."""
  v, t = np.float64(v), np.float64(t)
  s = math.exp(logit_scale) * v @ t.T
  n = len(v)
  total = 0.0
  for sim in (s, s.T):
    for i in range(n):
      pos = np.array([(text_key[i] == text_key[j]) or (sequence_key[i] == sequence_key[j])
                      for j in range(n)], np.float64)
      y = pos / pos.sum()
      logp = sim[i] - np.log(np.sum(np.exp(sim[i])))
      total -= np.sum(y * logp)
  return total / (2 * n)


def _embeddings(n, c, seed):
  rng = np.random.default_rng(seed)
  v = rng.normal(size=(n, c)).astype(np.float32)
  t = rng.normal(size=(n, c)).astype(np.float32)
  return v / np.linalg.norm(v, axis=1, keepdims=True), t / np.linalg.norm(t, axis=1, keepdims=True)


def test_coa_matches_numpy_reference_with_repeated_texts():
  v, t = _embeddings(6, 8, 0)
  text_key = np.array([1, 2, 1, 3, 4, 4], np.int32)  # samples 0/2 and 4/5 share a sentence
  sequence_key = np.array([10, 11, 12, 13, 13, 14], np.int32)  # 3/4 share a sequence
  got = losses.coa_loss(v, t, 2.0, text_key, sequence_key)
  np.testing.assert_allclose(got, numpy_coa(v, t, 2.0, text_key, sequence_key), rtol=1e-5)
  # Treating the repeated sentences as negatives (distinct keys) gives a different loss.
  distinct = losses.coa_loss(v, t, 2.0, np.arange(6), np.arange(6))
  assert abs(float(distinct) - float(got)) > 1e-3


def test_coa_with_distinct_keys_is_clip_loss():
  v, t = _embeddings(5, 4, 1)
  logits = math.exp(1.5) * v @ t.T
  labels = np.arange(5)
  clip = 0.5 * (optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
                + optax.softmax_cross_entropy_with_integer_labels(logits.T, labels).mean())
  got = losses.coa_loss(v, t, 1.5, np.arange(5), np.arange(5) + 100)
  np.testing.assert_allclose(got, clip, rtol=1e-5)


def test_total_loss_weights():
  cfg = ml_collections.ConfigDict(dict(w_cls=8.334, w_l1=5.0, w_giou=2.0, w_coa=1.0, w_loc=0.5))
  parts = {'cls': jnp.float32(1.0), 'l1': jnp.float32(2.0), 'giou': jnp.float32(3.0),
           'coa': jnp.float32(4.0)}
  np.testing.assert_allclose(losses.total_loss(parts, cfg), 8.334 + 10 + 6 + 4, rtol=1e-6)
  parts['loc'] = jnp.float32(6.0)
  np.testing.assert_allclose(losses.total_loss(parts, cfg), 8.334 + 10 + 6 + 4 + 3, rtol=1e-6)
