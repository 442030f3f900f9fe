"""Box conversions, IoU and generalised IoU (GIoU) on arrays of boxes.

Formats: `cxcywh` = (centre x, centre y, width, height), `xyxy` = (x0, y0, x1, y1), `xywh` = (left,
top, width, height). Units are whatever the caller uses (normalised crop units in the losses, pixels
elsewhere). Every function works on numpy and jax arrays with any leading shape [..., 4].
"""

import jax.numpy as jnp


def cxcywh_to_xyxy(boxes):
  """[..., 4] (cx, cy, w, h) -> [..., 4] (x0, y0, x1, y1)."""
  cx, cy, w, h = jnp.moveaxis(jnp.asarray(boxes), -1, 0)
  return jnp.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=-1)


def xyxy_to_cxcywh(boxes):
  """[..., 4] (x0, y0, x1, y1) -> [..., 4] (cx, cy, w, h)."""
  x0, y0, x1, y1 = jnp.moveaxis(jnp.asarray(boxes), -1, 0)
  return jnp.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], axis=-1)


def xywh_to_xyxy(boxes):
  """[..., 4] (x, y, w, h) -> [..., 4] (x0, y0, x1, y1)."""
  x, y, w, h = jnp.moveaxis(jnp.asarray(boxes), -1, 0)
  return jnp.stack([x, y, x + w, y + h], axis=-1)


def xyxy_to_xywh(boxes):
  """[..., 4] (x0, y0, x1, y1) -> [..., 4] (x, y, w, h)."""
  x0, y0, x1, y1 = jnp.moveaxis(jnp.asarray(boxes), -1, 0)
  return jnp.stack([x0, y0, x1 - x0, y1 - y0], axis=-1)


def area(boxes_xyxy):
  """[..., 4] xyxy -> [...] area (0 for degenerate boxes)."""
  x0, y0, x1, y1 = jnp.moveaxis(jnp.asarray(boxes_xyxy), -1, 0)
  return jnp.maximum(x1 - x0, 0) * jnp.maximum(y1 - y0, 0)


def _intersection_union(a, b):
  """Pairwise-aligned xyxy boxes [..., 4] -> (intersection [...], union [...])."""
  lo = jnp.maximum(a[..., :2], b[..., :2])
  hi = jnp.minimum(a[..., 2:], b[..., 2:])
  inter = jnp.prod(jnp.maximum(hi - lo, 0), axis=-1)
  return inter, area(a) + area(b) - inter


def iou(a_xyxy, b_xyxy, eps=1e-7):
  """IoU of aligned boxes: [..., 4] xyxy, [..., 4] xyxy -> [...] in [0, 1]."""
  inter, union = _intersection_union(jnp.asarray(a_xyxy), jnp.asarray(b_xyxy))
  return inter / jnp.maximum(union, eps)


def generalized_iou(a_xyxy, b_xyxy, eps=1e-7):
  """GIoU (Rezatofighi et al. 2019) of aligned boxes: [..., 4] xyxy x2 -> [...] in [-1, 1].

  GIoU = IoU - (|C| - |A u B|) / |C|, C the smallest box enclosing both.
  """
  a, b = jnp.asarray(a_xyxy), jnp.asarray(b_xyxy)
  inter, union = _intersection_union(a, b)
  enclosing = area(jnp.concatenate([jnp.minimum(a[..., :2], b[..., :2]),
                                    jnp.maximum(a[..., 2:], b[..., 2:])], axis=-1))
  enclosing = jnp.maximum(enclosing, eps)
  return inter / jnp.maximum(union, eps) - (enclosing - union) / enclosing


def start_box_problem(box, image_wh):
  """Why (x, y, w, h) px cannot start a track in a W x H frame, or None when it can.

  A start box has four finite numbers, positive width and height, and overlaps the frame (negative
  x, y are legal: a target partly outside the image). image_wh: (W, H) px.
  """
  import math
  values = [float(v) for v in box] if hasattr(box, '__len__') else []
  if len(values) != 4:
    return f'a box is 4 numbers x,y,w,h; got {len(values)}'
  if not all(math.isfinite(v) for v in values):
    return f'box {values} is not finite'
  x, y, w, h = values
  if w <= 0 or h <= 0:
    return f'box {values} has zero or negative size'
  width, height = float(image_wh[0]), float(image_wh[1])
  if x >= width or y >= height or x + w <= 0 or y + h <= 0:
    return f'box {values} lies entirely outside the {width:g} x {height:g} frame'
  return None
