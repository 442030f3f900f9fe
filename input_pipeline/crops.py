"""Crop geometry shared by the training stream and the tracker (docs/design.md §2).

A crop window is an array [..., 3] = (cx, cy, side) in frame pixels: a square centred on (cx, cy).
Pixel i of a frame covers [i, i+1), so its centre is i + 0.5. The window -> output map is continuous
with half-pixel centres: output pixel u (of S) has its centre u + 0.5 at frame coordinate
x0 + (u + 0.5) * side / S, with x0 = cx - side / 2. Sampling is bilinear on the frame extended by
`fill` (the frame's per-channel mean unless given) outside the image, so a crop that leaves the frame
fades into the mean over one pixel, identically in JAX (`crop_jax`, tracker) and TF (`crop_tf`, stream).

Boxes are (x, y, w, h) pixels outside crops and normalised (cx, cy, w, h) inside them (fractions of
the crop side), the model's output convention. The geometry functions take numpy or jnp arrays.
"""

import jax
import jax.numpy as jnp
import numpy as np

BACKBONE_STRIDE = 8  # output stride of the trunk (layer3 at stride 1): search map = search_size / 8


def _xp(*arrays):
  return jnp if any(isinstance(a, jax.Array) for a in arrays) else np


def _window(window):
  xp = _xp(window)
  window = xp.asarray(window)
  return window[..., 0], window[..., 1], window[..., 2]


def crop_side(wh, factor, min_side, rule='transt'):
  """Side in px of the square window around a w x h target ([..., 2] px -> [...]).

  'transt': sqrt((w + (f-1)(w+h)/2) (h + (f-1)(w+h)/2)) (TransT's trackers; f=2 is SiamFC's context);
  'pytracking': f sqrt(w h). Both floored at min_side, so tiny targets keep some context.
  """
  xp = _xp(wh)
  wh = xp.asarray(wh)
  w, h = wh[..., 0], wh[..., 1]
  if rule == 'transt':
    pad = (factor - 1.0) * (w + h) / 2.0
    side = xp.sqrt((w + pad) * (h + pad))
  elif rule == 'pytracking':
    side = factor * xp.sqrt(w * h)
  else:
    raise ValueError(f'unknown crop.size_rule {rule!r}: expected "transt" or "pytracking"')
  return xp.maximum(side, min_side)


def crop_window(box_xywh, factor, min_side, rule='transt'):
  """Window [..., 3] = (cx, cy, side) px centred on the box [..., 4] (x, y, w, h) px."""
  xp = _xp(box_xywh)
  box = xp.asarray(box_xywh)
  cx = box[..., 0] + box[..., 2] / 2.0
  cy = box[..., 1] + box[..., 3] / 2.0
  side = crop_side(box[..., 2:4], factor, min_side, rule)
  return xp.stack([cx, cy, side.astype(cx.dtype)], axis=-1)


def box_to_crop(box_xywh, window, out_size=None):
  """Frame box [..., 4] (x, y, w, h) px -> normalised (cx, cy, w, h) in the crop [..., 4].

  Normalised by the crop side, so out_size does not change the result (crop pixels = value * out_size);
  it is accepted so that callers state which crop they mean.
  """
  del out_size
  xp = _xp(box_xywh, window)
  box = xp.asarray(box_xywh)
  cx, cy, side = _window(window)
  x0, y0 = cx - side / 2.0, cy - side / 2.0
  return xp.stack([(box[..., 0] + box[..., 2] / 2.0 - x0) / side,
                   (box[..., 1] + box[..., 3] / 2.0 - y0) / side,
                   box[..., 2] / side, box[..., 3] / side], axis=-1)


def crop_to_box(box_cxcywh, window, out_size=None):
  """Normalised (cx, cy, w, h) in the crop [..., 4] -> frame box (x, y, w, h) px; box_to_crop's inverse."""
  del out_size
  xp = _xp(box_cxcywh, window)
  box = xp.asarray(box_cxcywh)
  cx, cy, side = _window(window)
  x0, y0 = cx - side / 2.0, cy - side / 2.0
  w, h = box[..., 2] * side, box[..., 3] * side
  return xp.stack([x0 + box[..., 0] * side - w / 2.0, y0 + box[..., 1] * side - h / 2.0, w, h], axis=-1)


def sample_positions(start, side, out_size, xp=np):
  """Frame pixel-index coordinates [S] sampled along one axis (pixel i has its centre at index i)."""
  u = xp.arange(out_size, dtype=xp.float32)
  return start + (u + 0.5) * (side / out_size) - 0.5


def frame_mean(frame):
  """Per-channel mean [3] float32 of a uint8 frame [H, W, 3] (numpy or jnp)."""
  xp = _xp(frame)
  return xp.mean(xp.asarray(frame).astype(xp.float32), axis=(0, 1))


# ---------------------------------------------------------------------------------------- JAX

def _interp_axis(image, pos, fill, axis):
  """Bilinear along `axis` of image at float indices pos [S]; outside [0, n) reads `fill` [3]."""
  n = image.shape[axis]
  i0 = jnp.floor(pos)
  t = (pos - i0).astype(jnp.float32)
  i0 = i0.astype(jnp.int32)
  shape = [1] * image.ndim
  shape[axis] = -1

  def read(i):
    values = jnp.take(image, jnp.clip(i, 0, n - 1), axis=axis)
    valid = ((i >= 0) & (i < n)).reshape(shape)
    return jnp.where(valid, values, fill)

  t = t.reshape(shape)
  return read(i0) * (1.0 - t) + read(i0 + 1) * t


def crop_jax_float(frame, window, out_size, fill=None):
  """Crop as float32 [S, S, 3] (values in 0..255, not rounded); see crop_jax."""
  image = jnp.asarray(frame).astype(jnp.float32)
  fill = frame_mean(image) if fill is None else jnp.asarray(fill, jnp.float32)
  window = jnp.asarray(window, jnp.float32)
  cx, cy, side = window[0], window[1], window[2]
  ys = sample_positions(cy - side / 2.0, side, out_size, jnp)
  xs = sample_positions(cx - side / 2.0, side, out_size, jnp)
  rows = _interp_axis(image, ys, fill, axis=0)  # [S, W, 3]
  return _interp_axis(rows, xs, fill, axis=1)  # [S, S, 3]


def quantize(image):
  """float 0..255 -> uint8, rounding half up (same rule in numpy, JAX and TF paths)."""
  xp = _xp(image)
  return xp.clip(xp.floor(image + 0.5), 0, 255).astype(xp.uint8)


def crop_jax(frame, window, out_size, fill=None):
  """uint8 frame [H, W, 3], window (cx, cy, side) px -> uint8 crop [S, S, 3]. jit (S static) / vmap-able."""
  return quantize(crop_jax_float(frame, window, out_size, fill))


# ---------------------------------------------------------------------------------------- TF

def resize_box(window, height, width, out_size, stack=np.stack):
  """tf.image.crop_and_resize box [..., 4] (y1, x1, y2, x2) that samples a window's ([..., 3]) crop from
  an H x W frame padded by one pixel on each side (height, width, out_size broadcast).

  crop_and_resize samples row i at y1 (Hp-1) + i (y2-y1)(Hp-1)/(S-1) of the padded frame (Hp = H + 2);
  the box puts those samples at our half-pixel positions (+1 for the pad row). numpy by default; pass
  stack=tf.stack for tensors.
  """
  cx, cy, side = window[..., 0], window[..., 1], window[..., 2]
  step = side / out_size
  y_first = cy - side / 2.0 + 0.5 * step + 0.5  # -0.5 (pixel centres at .5) + 1 (pad)
  x_first = cx - side / 2.0 + 0.5 * step + 0.5
  span = step * (out_size - 1)
  hp, wp = height + 1.0, width + 1.0  # (H + 2) - 1
  return stack([y_first / hp, x_first / wp, (y_first + span) / hp, (x_first + span) / wp], axis=-1)


def crop_tf_float(frame, window, out_size, fill=None, box=None):
  """TF crop as float32 [S, S, 3] (0..255, not rounded); the same map as crop_jax_float.

  Sampling the frame minus `fill`, padded by one zero pixel, with crop_and_resize (which extrapolates
  with one constant, here 0) at our positions gives bilinear sampling of the fill-extended frame.
  box: resize_box(...) precomputed (the stream computes it in float64 numpy), else computed here.
  """
  import tensorflow as tf  # the tracker imports this module without TF
  image = tf.cast(frame, tf.float32)
  fill = tf.reduce_mean(image, axis=(0, 1)) if fill is None else tf.cast(fill, tf.float32)
  if box is None:
    shape = tf.cast(tf.shape(image), tf.float32)
    box = resize_box(tf.cast(window, tf.float32), shape[0], shape[1], out_size, stack=tf.stack)
  padded = tf.pad(image - fill, [[1, 1], [1, 1], [0, 0]])
  crop = tf.image.crop_and_resize(padded[None], tf.cast(box, tf.float32)[None], [0], [out_size, out_size],
                                  method='bilinear', extrapolation_value=0.0)[0]
  return crop + fill


def crop_tf(frame, window, out_size, fill=None):
  """uint8 frame [H, W, 3] (tf or numpy), window (cx, cy, side) px -> uint8 tf crop [S, S, 3]."""
  import tensorflow as tf
  crop = crop_tf_float(frame, window, out_size, fill)
  return tf.cast(tf.clip_by_value(tf.floor(crop + 0.5), 0.0, 255.0), tf.uint8)


# ---------------------------------------------------------------------------------------- tokens

def _conv_centres(map_size, out_size, kernel, dilation, stride, padding):
  """Input-map index of each conv output's receptive-field centre [out_size] (flax/lax padding rules)."""
  span = (kernel - 1) * dilation + 1
  if padding == 'VALID':
    before = 0
  else:  # SAME, as lax.padtype_to_pads: total = max((out-1) stride + span - in, 0), before = total // 2
    before = max((out_size - 1) * stride + span - map_size, 0) // 2
  return np.arange(out_size) * stride - before + (span - 1) / 2.0


def token_centers(model_cfg):
  """(x, y) crop-pixel centres [grid*grid, 2] of the visual tokens, row-major (token = row*grid + col).

  The search map has search_size / 8 cells, cell i centred at (i + 0.5) * 8 px.
  'resample': the map resampled to grid x grid with half-pixel centres -> (k + 0.5) * S / grid.
  'valid_dilated': a VALID k x k conv with dilation d -> map cell k' + (k-1) d / 2 (central region only).
  'stride2_320': a SAME k x k conv with stride 2 on the (320 / 8 = 40)-cell map -> cell 2k' + 1 for k=5.
  """
  mode, grid, size = model_cfg.token.mode, model_cfg.token.grid, model_cfg.search_size
  map_size = size // BACKBONE_STRIDE
  kernel = model_cfg.token.kernel
  if mode == 'resample':
    line = (np.arange(grid) + 0.5) * size / grid
  elif mode in ('valid_dilated', 'stride2_320'):
    if mode == 'valid_dilated':
      cells = _conv_centres(map_size, grid, kernel, model_cfg.token.dilation, 1, 'VALID')
      expected = map_size - (kernel - 1) * model_cfg.token.dilation
    else:
      cells = _conv_centres(map_size, grid, kernel, 1, 2, 'SAME')
      expected = -(-map_size // 2)
    if expected != grid:
      raise ValueError(f'token.mode={mode!r}: search_size {size} gives a {map_size}-cell map and '
                       f'{expected} tokens a side, but token.grid is {grid}')
    line = (cells + 0.5) * BACKBONE_STRIDE
  else:
    raise ValueError(f'unknown token.mode {mode!r}')
  xs, ys = np.meshgrid(line, line)  # xs varies along columns
  return np.stack([xs.reshape(-1), ys.reshape(-1)], axis=-1).astype(np.float32)


# ---------------------------------------------------------------------------------------- no template

def blank_template(size, image_mean):
  """uint8 [size, size, 3] filled with the normalisation mean (round(255 mean)): 'no template'.

  The model normalises it to about zero. It stands for a missing template: training replaces a share
  of templates with it (config.train.template_drop) so the sentence alone must find the target, and a
  sentence-only start searches the first frame with it.
  """
  colour = np.round(255.0 * np.asarray(image_mean, np.float64)).astype(np.uint8)
  return np.broadcast_to(colour, (size, size, 3)).copy()
