"""2-D sine position encoding of DETR/TransT (`PositionEmbeddingSine(d/2, normalize=True)`), no padding."""

import math

import jax.numpy as jnp


def sine_position_encoding(height, width, dim, temperature=10000.0, scale=2 * math.pi):
  """[height, width, dim] float32: first dim/2 channels encode y, the rest x.

  Row i has y = (i + 1) / (height + 1e-6) * scale (normalised cumulative sum over an unpadded map);
  channel pairs (2k, 2k+1) are sin/cos of y / temperature^(2k / (dim/2)), interleaved as in DETR.
  """
  half = dim // 2
  eps = 1e-6
  y = jnp.arange(1, height + 1, dtype=jnp.float32) / (height + eps) * scale
  x = jnp.arange(1, width + 1, dtype=jnp.float32) / (width + eps) * scale
  dim_t = temperature ** (2 * (jnp.arange(half) // 2) / half)

  def encode(values):  # [n] -> [n, half], sin on even and cos on odd channels
    angles = values[:, None] / dim_t
    return jnp.stack([jnp.sin(angles[:, 0::2]), jnp.cos(angles[:, 1::2])], axis=-1).reshape(
        values.shape[0], half)

  pos_y = jnp.broadcast_to(encode(y)[:, None, :], (height, width, half))
  pos_x = jnp.broadcast_to(encode(x)[None, :, :], (height, width, half))
  return jnp.concatenate([pos_y, pos_x], axis=-1)
