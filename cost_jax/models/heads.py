"""Prediction heads on the VL transformer's outputs (DESIGN §1, `head.type`).

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


class ObjHead(nn.Module):
  """[OBJ] output [B, d] -> {'boxes': [B, 1, 4]} (float32)."""
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, obj):
    return {'boxes': BoxHead(self.dtype, name='regressor')(obj)[:, None, :]}
