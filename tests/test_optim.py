"""Optimiser: schedule values, decay mask, learning-rate groups and the frozen text encoder."""

import jax
import jax.numpy as jnp
import numpy as np

from configs import common
from cost_jax import optim


def _train_cfg(**overrides):
  cfg = common.base_config().train
  cfg.update(dict(lr=1e-3, warmup_steps=4, lr_milestones=(10, 20), lr_decay=0.1, grad_clip=0.0,
                  weight_decay=0.5))
  cfg.update(overrides)
  return cfg


def _params():
  return {'backbone': {'conv1': {'kernel': jnp.ones((2, 2))}, 'bn1': {'scale': jnp.ones(2)}},
          'text_encoder': {'embeddings': {'embedding': jnp.ones((3, 2))},
                           'dense': {'kernel': jnp.ones((2, 2)), 'bias': jnp.ones(2)}},
          'coa': {'logit_scale': jnp.ones(())},
          'head': {'kernel': jnp.ones((2, 2)), 'bias': jnp.ones(2)}}


def test_schedule_warmup_then_step_decay():
  lr = optim.learning_rate_fn(_train_cfg())
  np.testing.assert_allclose([lr(s) for s in (0, 1, 3, 9, 10, 19, 20)],
                             [2.5e-4, 5e-4, 1e-3, 1e-3, 1e-4, 1e-4, 1e-5], rtol=1e-6)


def test_decay_mask_only_kernels():
  mask = optim.decay_mask(_params())
  assert mask['backbone']['conv1']['kernel'] and mask['head']['kernel']
  assert not mask['backbone']['bn1']['scale'] and not mask['head']['bias']
  assert not mask['text_encoder']['embeddings']['embedding'] and not mask['coa']['logit_scale']


def _first_update(cfg):
  params = _params()
  tx = optim.make_optimizer(cfg, params)
  grads = jax.tree.map(lambda p: 0.5 * jnp.ones_like(p), params)
  updates, _ = tx.update(grads, tx.init(params), params)
  return updates


def test_adamw_groups_and_decay_first_step():
  cfg = _train_cfg(warmup_steps=1)
  u = _first_update(cfg)
  # Adam's first step is -lr * g/|g| (up to eps); AdamW adds -lr * wd * p on kernels.
  np.testing.assert_allclose(u['head']['bias'], -1e-3, rtol=1e-5)
  np.testing.assert_allclose(u['head']['kernel'], -1e-3 * (1 + 0.5), rtol=1e-5)
  np.testing.assert_allclose(u['coa']['logit_scale'], -1e-3, rtol=1e-5)
  np.testing.assert_allclose(u['backbone']['conv1']['kernel'], -1e-4 * 1.5, rtol=1e-5)
  np.testing.assert_allclose(u['backbone']['bn1']['scale'], -1e-4, rtol=1e-5)
  np.testing.assert_allclose(u['text_encoder']['dense']['bias'], -1e-4, rtol=1e-5)


def test_frozen_text_encoder_gets_exactly_zero_and_no_clip_share():
  cfg = _train_cfg(warmup_steps=1, freeze_text=True, optimizer='sgd', grad_clip=1.0)
  u = _first_update(cfg)
  assert all(float(jnp.abs(x).max()) == 0.0 for x in jax.tree.leaves(u['text_encoder']))
  # Clipping sees only the trained gradients: 2*2 + 2 + 1 + 4 + 2 = 13 leaves of 0.5.
  scale = min(1.0, 1.0 / (0.5 * np.sqrt(13)))
  np.testing.assert_allclose(u['head']['bias'], -1e-3 * 0.5 * scale, rtol=1e-5)


def test_sgd_is_lr_times_gradient():
  u = _first_update(_train_cfg(warmup_steps=1, optimizer='sgd'))
  np.testing.assert_allclose(u['head']['kernel'], -1e-3 * 0.5, rtol=1e-6)
  np.testing.assert_allclose(u['backbone']['conv1']['kernel'], -1e-4 * 0.5, rtol=1e-6)
