"""Token conv: the fused search map -> grid x grid = 400 visual tokens (docs/design.md §1,
`token.mode`).

Modes (map side n = search_size / 8; token centres in crop pixels, used by crops.token_centers):
  resample       5x5 conv SAME on the n x n map, then bilinear resample n -> grid with half-pixel
                 centres (no antialiasing, like torch interpolate(align_corners=False)): token j is
                 centred at (j + 0.5) * search_size / grid, uniform over the crop.
  valid_dilated  5x5 conv, dilation 3, VALID: 32 -> 20; token j sits on map cell j + 6, centre
                 (j + 6.5) * 8 px: only the central 152 px of a 256 crop.
  stride2_320    search 320 -> 40 x 40 map, 5x5 conv stride 2 SAME (XLA pads 1 before, 2 after):
                 token j sits on map cell 2j + 1, centre (2j + 1.5) * 8 = 16 j + 12 px.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

MODES = ('resample', 'valid_dilated', 'stride2_320')


class TokenConv(nn.Module):
  """[B, n, n, d] -> [B, grid*grid, d] tokens, row-major. `cfg` is config.model.token."""
  cfg: Any
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    cfg = self.cfg
    d, k, grid = x.shape[-1], cfg.kernel, cfg.grid
    if cfg.mode == 'resample':
      y = nn.Conv(d, (k, k), padding='SAME', dtype=self.dtype, name='conv')(x)
      y = jax.image.resize(y, (y.shape[0], grid, grid, d), 'bilinear', antialias=False)
    elif cfg.mode == 'valid_dilated':
      y = nn.Conv(d, (k, k), padding='VALID', kernel_dilation=(cfg.dilation, cfg.dilation),
                  dtype=self.dtype, name='conv')(x)
    elif cfg.mode == 'stride2_320':
      y = nn.Conv(d, (k, k), strides=(2, 2), padding='SAME', dtype=self.dtype, name='conv')(x)
    else:
      raise ValueError(f'token.mode {cfg.mode!r} is not one of {MODES}')
    if y.shape[1:3] != (grid, grid):
      raise ValueError(f'token.mode {cfg.mode!r} turns a {x.shape[1]}x{x.shape[2]} map into '
                       f'{y.shape[1]}x{y.shape[2]}, not {grid}x{grid}: check model.search_size')
    return y.reshape(y.shape[0], grid * grid, d)
