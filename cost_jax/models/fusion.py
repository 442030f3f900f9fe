"""The visual-linguistic (VL) transformer: [OBJ; text; visual] tokens, TransVG-style, post-norm.

Sequence = 1 [OBJ] token (learned d-vector) + L text tokens + grid^2 visual tokens (1 + 40 + 400 = 441
for the paper config). A learned position embedding ([1 + max_len + grid^2, d]) is added to queries and
keys in every layer (not to values); text padding is masked as keys.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from cost_jax.models.attention import MultiHeadAttention, xavier
from cost_jax.models.visual_transformer import LN_EPS, feed_forward


class VLLayer(nn.Module):
  """x [B, N, d] -> ([B, N, d], attention weights [B, heads, N, N] or None). Post-norm."""
  num_heads: int
  mlp_dim: int
  dropout: float
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, pos, mask, deterministic=True, return_weights=False):
    d = x.shape[-1]
    drop = lambda y: nn.Dropout(self.dropout)(y, deterministic=deterministic)
    attended, weights = MultiHeadAttention(self.num_heads, self.dropout, self.dtype, name='self_attn')(
        x, x, x, pos, pos, mask, deterministic, return_weights)
    x = nn.LayerNorm(LN_EPS, dtype=self.dtype, name='norm1')(x + drop(attended))
    ffn = feed_forward(x, nn.Dense(self.mlp_dim, kernel_init=xavier, dtype=self.dtype, name='linear1'),
                       nn.Dense(d, kernel_init=xavier, dtype=self.dtype, name='linear2'),
                       self.dropout, deterministic)
    return nn.LayerNorm(LN_EPS, dtype=self.dtype, name='norm2')(x + drop(ffn)), weights


class VLTransformer(nn.Module):
  """(text [B, L, d], text_mask [B, L], visual [B, V, d]) -> (fused [B, 1+L+V, d], obj attention).

  `cfg` is config.model.vl; `max_len` = config.model.text.max_len (L <= max_len; a shorter L uses
  the first 1+L text rows of the position embedding); `num_visual` = grid^2. The returned
  attention, when asked (else None), is the last layer's {'obj': the [OBJ] query's row
  [B, heads, 1+L+V], 'visual': the mean row of the V visual queries [B, heads, 1+L+V]} (the dense
  head reads the visual tokens, so their attention on the text is what the sentence can change).
  """
  cfg: Any
  max_len: int
  num_visual: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, text, text_mask, visual, deterministic=True, return_attention=False):
    cfg = self.cfg
    b, num_text, d = text.shape
    if num_text > self.max_len:
      raise ValueError(f'{num_text} text tokens exceed text.max_len={self.max_len}')
    obj = self.param('obj_token', nn.initializers.normal(0.02), (d,), jnp.float32)
    pos_table = self.param('position_embedding', nn.initializers.normal(0.02),
                           (1 + self.max_len + self.num_visual, d), jnp.float32)
    pos = jnp.concatenate([pos_table[:1 + num_text], pos_table[1 + self.max_len:]], axis=0)
    x = jnp.concatenate([jnp.broadcast_to(obj.astype(self.dtype), (b, 1, d)),
                         text.astype(self.dtype), visual.astype(self.dtype)], axis=1)
    mask = jnp.concatenate([jnp.ones((b, 1), bool), text_mask.astype(bool),
                            jnp.ones((b, visual.shape[1]), bool)], axis=1)
    weights = None
    for i in range(cfg.num_layers):
      last = i == cfg.num_layers - 1
      x, weights = VLLayer(cfg.num_heads, cfg.mlp_dim, cfg.dropout, self.dtype, name=f'layer_{i}')(
          x, pos, mask, deterministic, return_attention and last)
    attention = None
    if return_attention:
      attention = {'obj': weights[:, :, 0, :],
                   'visual': jnp.mean(weights[:, :, 1 + num_text:, :], axis=2)}
    return x, attention
