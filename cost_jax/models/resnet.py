"""ResNet-50-style trunk: stem + layer1..layer3, layer3 at stride 1 (output stride 8), frozen BatchNorm.

Parameter names follow torchvision (`conv1`, `bn1`, `layer1_0/conv1`, `layer1_0/downsample_conv`, ...)
so converted weights map one to one. Images enter normalised, NHWC.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

# (first block, later blocks): ResNet-50's 6 blocks give [2,1,1,1,1,1] and [1,2,2,2,2,2].
DILATION_PRESETS = {
    'transt': (2, 1),  # TransT: only the first layer3 block dilates
    'torchvision': (1, 2),  # replace_stride_with_dilation=[False, True, False]
}

# torchvision's kaiming_normal_(mode='fan_out', nonlinearity='relu').
conv_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')


def layer3_dilations(backbone_cfg):
  """The conv2 dilation of each layer3 block: a preset name (any depth) or an explicit list."""
  value, blocks = backbone_cfg.layer3_dilations, backbone_cfg.blocks[2]
  if isinstance(value, str):
    first, rest = DILATION_PRESETS[value]
    return (first,) + (rest,) * (blocks - 1)
  dilations = tuple(int(d) for d in value)
  if len(dilations) != blocks:
    raise ValueError(f'layer3_dilations {dilations} needs one entry per layer3 block '
                     f'({backbone_cfg.blocks[2]})')
  return dilations


class FrozenBatchNorm(nn.Module):
  """y = (x - mean) / sqrt(var + eps) * scale + bias with fixed statistics (torchvision FrozenBatchNorm2d).

  mean and var always live in 'batch_stats'; scale and bias too, unless `train_bn` (then in 'params').
  """
  train_bn: bool = False
  eps: float = 1e-5
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    mean = self.variable('batch_stats', 'mean', lambda: jnp.zeros((c,), jnp.float32)).value
    var = self.variable('batch_stats', 'var', lambda: jnp.ones((c,), jnp.float32)).value
    if self.train_bn:
      scale = self.param('scale', nn.initializers.ones, (c,), jnp.float32)
      bias = self.param('bias', nn.initializers.zeros, (c,), jnp.float32)
    else:
      scale = self.variable('batch_stats', 'scale', lambda: jnp.ones((c,), jnp.float32)).value
      bias = self.variable('batch_stats', 'bias', lambda: jnp.zeros((c,), jnp.float32)).value
    mul = scale * (var + self.eps) ** -0.5
    add = bias - mean * mul
    return x * mul.astype(self.dtype) + add.astype(self.dtype)


def _conv(features, kernel, stride=1, dilation=1, name=None, dtype=jnp.float32):
  """torch-style Conv2d without bias: padding = dilation * (kernel - 1) / 2 on each side."""
  pad = dilation * (kernel - 1) // 2
  return nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding=((pad, pad), (pad, pad)),
                 kernel_dilation=(dilation, dilation), use_bias=False, kernel_init=conv_init,
                 dtype=dtype, name=name)


class Bottleneck(nn.Module):
  """torchvision Bottleneck (stride on conv2): 1x1 -> 3x3 (stride, dilation) -> 1x1 (4x width)."""
  width: int
  stride: int = 1
  dilation: int = 1
  downsample: bool = False
  train_bn: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    bn = lambda name: FrozenBatchNorm(self.train_bn, dtype=self.dtype, name=name)
    y = nn.relu(bn('bn1')(_conv(self.width, 1, name='conv1', dtype=self.dtype)(x)))
    y = _conv(self.width, 3, self.stride, self.dilation, name='conv2', dtype=self.dtype)(y)
    y = nn.relu(bn('bn2')(y))
    y = bn('bn3')(_conv(4 * self.width, 1, name='conv3', dtype=self.dtype)(y))
    if self.downsample:
      x = bn('downsample_bn')(
          _conv(4 * self.width, 1, self.stride, name='downsample_conv', dtype=self.dtype)(x))
    return nn.relu(x + y)


class ResNetTrunk(nn.Module):
  """[B, H, W, 3] normalised image -> layer3 map [B, H/8, W/8, 4 * widths[2]].

  `cfg` is config.model.backbone (stem_width, widths, blocks, layer3_dilations, train_bn).
  """
  cfg: Any
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    cfg = self.cfg
    x = _conv(cfg.stem_width, 7, 2, name='conv1', dtype=self.dtype)(x.astype(self.dtype))
    x = nn.relu(FrozenBatchNorm(cfg.train_bn, dtype=self.dtype, name='bn1')(x))
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    in_features = cfg.stem_width
    strides = (1, 2, 1)  # layer3 at stride 1: output stride 8
    dilations: Sequence[Sequence[int]] = ((1,) * cfg.blocks[0], (1,) * cfg.blocks[1],
                                          layer3_dilations(cfg))
    for layer, (width, blocks) in enumerate(zip(cfg.widths, cfg.blocks)):
      for i in range(blocks):
        stride = strides[layer] if i == 0 else 1
        downsample = i == 0 and (stride != 1 or in_features != 4 * width)
        x = Bottleneck(width, stride, dilations[layer][i], downsample, cfg.train_bn,
                       dtype=self.dtype, name=f'layer{layer + 1}_{i}')(x)
        in_features = 4 * width
    return x
