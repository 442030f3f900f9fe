"""CoA, contrastive alignment (training only): projection heads and the learned temperature.

visual embedding = L2-normalise(Linear(mean of the visual tokens)); text embedding =
L2-normalise(Linear(masked mean of the text encoder's tokens)); logit_scale = ln(1/tau), a parameter
initialised at coa.logit_scale_init and clipped to [0, coa.logit_scale_max]. The loss is in
cost_jax/losses.py.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp


def masked_mean(tokens, mask):
  """tokens [B, L, C], mask [B, L] (1 = token) -> [B, C] mean over the unmasked tokens."""
  m = mask.astype(jnp.float32)[..., None]
  return (tokens.astype(jnp.float32) * m).sum(1) / jnp.maximum(m.sum(1), 1.0)


def l2_normalise(x, eps=1e-12):
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


class CoA(nn.Module):
  """(visual tokens [B, V, d], text tokens [B, L, H], mask [B, L]) -> (v [B, c], t [B, c], scale []).

  `cfg` is config.model.coa (dim, logit_scale_init, logit_scale_max). Float32 throughout.
  """
  cfg: Any

  @nn.compact
  def __call__(self, visual, text, text_mask):
    v = nn.Dense(self.cfg.dim, name='visual_proj')(visual.astype(jnp.float32).mean(1))
    t = nn.Dense(self.cfg.dim, name='text_proj')(masked_mean(text, text_mask))
    scale = self.param('logit_scale', nn.initializers.constant(self.cfg.logit_scale_init), (),
                       jnp.float32)
    return l2_normalise(v), l2_normalise(t), jnp.clip(scale, 0.0, self.cfg.logit_scale_max)
