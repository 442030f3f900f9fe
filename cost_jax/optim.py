"""The optimiser of docs/design.md §3: AdamW with a decay mask, learning-rate groups, warmup then
step decay, global-norm clipping and an optional frozen text encoder.

Groups by top-level parameter name: params['backbone'] at lr x train.backbone_lr_mult,
params['text_encoder'] at lr x train.text_lr_mult, everything else (params['coa']['logit_scale']
included) at the full rate.
Freezing (train.freeze_text) is one mechanism: `frozen_mask` names the frozen parameters; the
optimiser gives them no state and zero updates (multi_transform -> set_to_zero), and the training
step takes no gradient through them (cost_jax.train.without_frozen_gradients uses the same mask).
Weight decay applies to kernels only (Dense/Conv 'kernel' leaves): never to biases, norms,
embeddings or logit_scale.
bf16 compute is config.model.dtype; parameters and optimiser state stay float32.
"""

import jax
import jax.numpy as jnp
import optax


def learning_rate_fn(train_cfg):
  """step -> lr: linear warmup over train.warmup_steps, then x train.lr_decay at each milestone."""
  milestones = jnp.asarray(tuple(train_cfg.lr_milestones) or (2 ** 31 - 1,), jnp.int32)

  def schedule(step):
    step = jnp.asarray(step, jnp.int32)
    warmup = jnp.minimum(1.0, (step + 1) / max(train_cfg.warmup_steps, 1))
    decays = jnp.sum(step >= milestones)
    return train_cfg.lr * warmup * train_cfg.lr_decay ** decays

  return schedule


def _leaf_name(path):
  return str(getattr(path[-1], 'key', path[-1]))


def _group(path):
  """'backbone', 'text_encoder' or 'rest' from a params-tree path."""
  top = str(getattr(path[0], 'key', path[0]))
  return top if top in ('backbone', 'text_encoder') else 'rest'


def decay_mask(params):
  """Tree of bools: True where weight decay applies (kernels)."""
  return jax.tree_util.tree_map_with_path(lambda p, _: _leaf_name(p) == 'kernel', params)


def lr_multipliers(params, train_cfg):
  """Tree of floats: each trained parameter's learning-rate multiplier (frozen ones: frozen_mask)."""
  mults = {'backbone': train_cfg.backbone_lr_mult, 'text_encoder': train_cfg.text_lr_mult,
           'rest': 1.0}
  return jax.tree_util.tree_map_with_path(lambda p, _: mults[_group(p)], params)


def frozen_mask(params, train_cfg):
  """Tree of bools: True for parameters that never change (the text encoder with
  train.freeze_text). The one definition of frozen, for the optimiser and the training step."""
  return jax.tree_util.tree_map_with_path(
      lambda p, _: bool(train_cfg.freeze_text) and _group(p) == 'text_encoder', params)


def scale_by_tree(multipliers):
  """Multiplies each update leaf by the matching leaf of `multipliers` (a tree of floats, or a
  function updates tree -> such a tree)."""

  def update(updates, state, params=None):
    del params
    mults = multipliers(updates) if callable(multipliers) else multipliers
    return jax.tree.map(lambda u, m: u * jnp.asarray(m, u.dtype), updates, mults), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def make_optimizer(train_cfg, params):
  """The optax transformation for `params` (a tree of arrays or ShapeDtypeStructs of params).

  train.optimizer 'adamw' (docs/design.md §3) or 'sgd' (plain SGD, same groups, no decay).
  """
  parts = []
  if train_cfg.grad_clip > 0:
    parts.append(optax.clip_by_global_norm(train_cfg.grad_clip))
  if train_cfg.optimizer == 'adamw':
    parts += [optax.scale_by_adam(),
              optax.add_decayed_weights(train_cfg.weight_decay, mask=decay_mask)]
  elif train_cfg.optimizer != 'sgd':
    raise ValueError(f'config.train.optimizer={train_cfg.optimizer!r}: use adamw or sgd')
  parts += [optax.scale_by_learning_rate(learning_rate_fn(train_cfg)),
            scale_by_tree(lambda updates: lr_multipliers(updates, train_cfg))]
  trained = optax.chain(*parts)
  frozen = frozen_mask(params, train_cfg)
  if not any(jax.tree.leaves(frozen)):
    return trained
  # Frozen parameters get exactly zero updates and hold no optimiser state: their Adam moments would
  # stay zero and their update is x0, so leaving them out changes no number (and spares the step a
  # pass over them: 22.7M MiniLM parameters, mu and nu, in the tiny config).
  labels = jax.tree.map(lambda f: 'frozen' if f else 'trained', frozen)
  return optax.multi_transform({'trained': trained, 'frozen': optax.set_to_zero()}, labels)
