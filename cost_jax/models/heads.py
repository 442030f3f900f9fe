"""Prediction heads on the VL transformer's outputs (docs/design.md §1, `head.type`).

dense (TransT-style): per visual token, a classifier MLP d -> cls_hidden -> 1 (logit: the target's
centre region is at this token) and a regressor Linear d -> 4, sigmoid -> (cx, cy, w, h) normalised to
the search crop (absolute in the crop, not relative to the token). obj (TransVG-style): one box from
the [OBJ] output with the same regressor.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp


class BoxHead(nn.Module):
  """[..., d] -> [..., 4] in (0, 1): sigmoid(Linear), normalised (cx, cy, w, h). Float32 output."""
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    return nn.sigmoid(nn.Dense(4, dtype=self.dtype, name='box')(x).astype(jnp.float32))


class DenseHead(nn.Module):
  """visual tokens [B, V, d] -> {'logits': [B, V], 'boxes': [B, V, 4]} (float32)."""
  cls_hidden: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, visual):
    h = nn.relu(nn.Dense(self.cls_hidden, dtype=self.dtype, name='cls_fc1')(visual))
    logits = nn.Dense(1, dtype=self.dtype, name='cls_fc2')(h)[..., 0].astype(jnp.float32)
    return {'logits': logits, 'boxes': BoxHead(self.dtype, name='regressor')(visual)}


class TextScore(nn.Module):
  """A direct sentence term for the dense classifier (head.text_score; a *choice*, not in the paper).

  (visual tokens [B, V, d], text tokens [B, L, d], text_mask [B, L]) -> [B, V] float32 logits:
  scale * cos(Dense(visual token), Dense(masked mean of the text tokens)), scale learned (init 1).
  The VL transformer can carry the sentence into the tokens only through attention; this bilinear
  path lets the detection loss tie words to what a token shows (its colour, its shape) directly.
  """
  dim: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, visual, text, text_mask):
    m = text_mask.astype(jnp.float32)[..., None]
    sentence = (text.astype(jnp.float32) * m).sum(1) / jnp.maximum(m.sum(1), 1.0)
    unit = lambda x: x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-6)
    v = unit(nn.Dense(self.dim, dtype=self.dtype, name='visual')(visual).astype(jnp.float32))
    t = unit(nn.Dense(self.dim, dtype=self.dtype, name='text')(sentence).astype(jnp.float32))
    scale = self.param('scale', nn.initializers.ones, (), jnp.float32)
    return scale * jnp.einsum('bvc,bc->bv', v, t)


class ObjHead(nn.Module):
  """[OBJ] output [B, d] -> {'boxes': [B, 1, 4]} (float32)."""
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, obj):
    return {'boxes': BoxHead(self.dtype, name='regressor')(obj)[:, None, :]}
