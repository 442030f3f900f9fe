"""Multi-head attention with positional terms added to queries and keys (DETR/TransT), not to values.

Equal to `torch.nn.MultiheadAttention(d, heads)(query + query_pos, key + key_pos, value)` on converted
weights: `in_proj_kernel` [d, 3d] is torch's `in_proj_weight` transposed (q, k, v blocks in that
order), `out_proj` a Dense.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

xavier = nn.initializers.xavier_uniform()


def add_position(x, pos):
  """x + pos, broadcasting pos [L, d] over the batch; x unchanged when pos is None."""
  return x if pos is None else x + pos.astype(x.dtype)


class MultiHeadAttention(nn.Module):
  """query [B, Lq, d], key/value [B, Lk, d] -> ([B, Lq, d], weights [B, heads, Lq, Lk] or None).

  key_mask [B, Lk] (true/1 = attend) masks padding keys. Dropout on the attention weights, as torch.
  """
  num_heads: int
  dropout: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, query, key, value, query_pos=None, key_pos=None, key_mask=None,
               deterministic=True, return_weights=False):
    d = query.shape[-1]
    h = self.num_heads
    kernel = self.param('in_proj_kernel', xavier, (d, 3 * d), jnp.float32).astype(self.dtype)
    bias = self.param('in_proj_bias', nn.initializers.zeros, (3 * d,), jnp.float32).astype(self.dtype)

    batch = query.shape[0]

    # Heads folded into one leading batch dimension, [B * heads, L, d/heads]: XLA:CPU runs such
    # batched matmuls as library GEMMs (the 4-d einsums: 49 vs 16 ms forward, 130 vs 127 ms
    # forward + backward, at the tiny VL shapes in one contended microbenchmark).
    def project(x, i):  # [B, L, d] -> [B * heads, L, d/heads]
      y = x.astype(self.dtype) @ kernel[:, i * d:(i + 1) * d] + bias[i * d:(i + 1) * d]
      y = y.reshape(y.shape[0], y.shape[1], h, d // h).transpose(0, 2, 1, 3)
      return y.reshape(batch * h, y.shape[2], d // h)

    q = project(add_position(query, query_pos), 0) * (d // h) ** -0.5
    k = project(add_position(key, key_pos), 1)
    v = project(value, 2)
    logits = jax.lax.dot_general(q, k, (((2,), (2,)), ((0,), (0,)))).astype(jnp.float32)
    logits = logits.reshape(batch, h, q.shape[1], k.shape[1])
    if key_mask is not None:
      logits = jnp.where(key_mask[:, None, None, :].astype(bool), logits, jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(logits, axis=-1)
    dropped = nn.Dropout(self.dropout)(weights, deterministic=deterministic)
    dropped = dropped.astype(self.dtype).reshape(batch * h, q.shape[1], k.shape[1])
    out = jax.lax.dot_general(dropped, v, (((2,), (1,)), ((0,), (0,))))
    out = out.reshape(batch, h, q.shape[1], d // h).transpose(0, 2, 1, 3)
    out = out.reshape(query.shape[0], query.shape[1], d)
    out = nn.Dense(d, kernel_init=xavier, dtype=self.dtype, name='out_proj')(out)
    return out, (weights if return_weights else None)
