"""cost_jax.text_cache: the frozen encoder's cached features give the step the encoder's loss/update."""

import jax
import numpy as np
import pytest

from cost_jax import pretrained
from cost_jax import sharding
from cost_jax import text_cache
from cost_jax import train
from cost_jax.models import cost
from tests.test_train import random_batch, tiny_config


def _rel(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12)


def test_cached_features_equal_the_encoder_once_per_sentence():
  config = tiny_config(batch_size=6)
  model = cost.COST(config.model)
  params = pretrained.init_variables(model, jax.random.key(0))['params']
  batch = random_batch(config)
  ids, mask = batch['text_ids'].copy(), batch['text_mask'].copy()
  ids[3], mask[3] = ids[0], mask[0]  # one sentence twice: encoded once
  cache = text_cache.TextFeatureCache(config, model)
  got = cache.features(params['text_encoder'], ids, mask)
  want = model.apply({'params': params}, ids, mask, method=cost.COST.text_encoder_features)
  assert got.shape == (6, config.model.text.max_len, config.model.text.hidden)
  assert _rel(got, want) < 1e-6
  assert (cache.misses, cache.hits, len(cache)) == (5, 1, 5)
  again = cache.features(params['text_encoder'], ids[::-1], mask[::-1])
  assert (cache.misses, cache.hits) == (5, 7)
  assert _rel(again, got[::-1]) == 0


def test_step_on_cached_features_equals_the_step_running_the_encoder():
  """Same loss and the same updated parameters (by norm) from the same state and batch."""
  config = tiny_config(batch_size=4)
  model = cost.COST(config.model)
  mesh = sharding.make_mesh(config.mesh, jax.devices()[:1])
  results = []
  for cached in (False, True):
    state, shardings, tx = train.create_train_state(config, model, jax.random.PRNGKey(0), mesh)
    batch = random_batch(config)
    if cached:
      batch = text_cache.TextFeatureCache(config, model).add_features(batch, state.params)
    step = train.make_train_step(config, model, tx, mesh, shardings)
    state, metrics = step(state, jax.device_put(batch, sharding.batch_sharding(mesh, config.mesh)))
    results.append((jax.device_get(metrics), jax.device_get(state.params)))
  (m0, p0), (m1, p1) = results
  for key in ('loss', 'cls', 'l1', 'giou', 'coa', 'grad_norm'):
    assert abs(float(m1[key]) - float(m0[key])) <= 1e-5 * max(abs(float(m0[key])), 1e-3), key
  flat0, flat1 = jax.tree.leaves(p0), jax.tree.leaves(p1)
  assert _rel(np.concatenate([x.ravel() for x in flat1]),
              np.concatenate([x.ravel() for x in flat0])) < 1e-6


@pytest.mark.parametrize('change', ['trained_text', 'text_dropout', 'empty_sentences', 'off'])
def test_cache_refused_where_it_would_change_the_step(change):
  config = tiny_config()
  assert text_cache.enabled(config)
  if change == 'trained_text':
    config.train.freeze_text = False
  elif change == 'text_dropout':
    config.model.text.dropout = 0.1
  elif change == 'empty_sentences':
    config.train.empty_sentences = True
  else:
    config.train.cache_text = False
  assert not text_cache.enabled(config)
  with pytest.raises(ValueError, match='freeze_text'):
    text_cache.TextFeatureCache(config)
