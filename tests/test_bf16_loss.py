"""model.dtype='bfloat16' (float32 parameters, bfloat16 compute): the training loss and gradients
stay close to float32's on the same parameters and batch (CPU; loose bounds, by norm)."""

import jax
import numpy as np

from cost_jax import losses
from cost_jax import pretrained
from cost_jax import train
from cost_jax.models import cost
from input_pipeline import crops
from tests.test_train import random_batch, tiny_config

# bfloat16 keeps 8 mantissa bits (relative rounding 2^-9 ~ 0.2% per op); through a dozen layers a few
# percent on the loss terms and ~10% on the gradient vector are expected, a broken cast gives O(1).
LOSS_RTOL = 0.03
GRAD_RTOL = 0.15


def _loss_and_grads(config, params, batch_stats, batch):
  model = cost.COST(config.model)
  m = config.model
  centers = np.asarray(crops.token_centers(m), np.float32) / m.search_size
  fn = lambda p: train.compute_losses(train.without_frozen_gradients(p, config.train), batch_stats, batch,
                                      jax.random.key(1), model=model, config=config,
                                      token_centers=centers, coa_fn=losses.coa_loss)
  (_, parts), grads = jax.jit(jax.value_and_grad(fn, has_aux=True))(params)
  return jax.device_get(parts), jax.device_get(grads)


def test_bfloat16_loss_and_gradients_close_to_float32():
  config = tiny_config(batch_size=4)
  variables = pretrained.init_variables(cost.COST(config.model), jax.random.key(0))
  batch = random_batch(config)
  f32_parts, f32_grads = _loss_and_grads(config, variables['params'], variables['batch_stats'],
                                         batch)
  config.model.dtype = 'bfloat16'
  bf_parts, bf_grads = _loss_and_grads(config, variables['params'], variables['batch_stats'], batch)
  assert {x.dtype for x in jax.tree.leaves(bf_grads)} == {np.dtype(np.float32)}
  for key in ('loss', 'cls', 'l1', 'giou', 'coa'):
    assert np.isfinite(bf_parts[key]), key
    assert abs(bf_parts[key] - f32_parts[key]) <= LOSS_RTOL * abs(f32_parts[key]) + 1e-4, (
        key, bf_parts[key], f32_parts[key])
  g32 = np.concatenate([x.ravel() for x in jax.tree.leaves(f32_grads)])
  gbf = np.concatenate([x.ravel() for x in jax.tree.leaves(bf_grads)])
  assert np.linalg.norm(gbf - g32) <= GRAD_RTOL * np.linalg.norm(g32)
