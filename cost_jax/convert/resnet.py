"""torchvision ResNet-50 state dicts -> the COST trunk (`params/backbone/...`, `batch_stats/backbone/...`).

Rename rules map torchvision names one to one (`layer1.0.conv1.weight` -> `layer1_0/conv1/kernel`,
`layer1.0.downsample.0` -> `downsample_conv`, `.1` -> `downsample_bn`). BatchNorm weight/bias become
scale/bias in 'batch_stats' (frozen) or in 'params' (backbone.train_bn); running mean/var go to
'batch_stats'. Ignored on purpose, and reported: layer4.*, fc.* and num_batches_tracked.
"""

from cost_jax.convert import core
from cost_jax.models import cost

IGNORE = (r'layer4\..*', r'fc\..*', r'.*num_batches_tracked')

_BLOCK = r'layer([1-3])\.(\d+)\.'  # -> layer\1_\2/


def _bn_rules(src, dst, train_bn):
  """Rules for one BatchNorm: src regex prefix (ends before 'weight'), dst path prefix (ends in '/')."""
  affine = 'params' if train_bn else 'batch_stats'
  return [(src + r'weight', f'{affine}/{dst}scale', 'none'),
          (src + r'bias', f'{affine}/{dst}bias', 'none'),
          (src + r'running_mean', f'batch_stats/{dst}mean', 'none'),
          (src + r'running_var', f'batch_stats/{dst}var', 'none')]


def resnet_rules(prefix='', train_bn=False):
  """Rules for a torchvision-layout trunk whose keys start with the regex `prefix`."""
  p, d = prefix, 'backbone/'
  block = d + r'layer\1_\2/'
  return ([(p + r'conv1\.weight', f'params/{d}conv1/kernel', 'conv')]
          + _bn_rules(p + r'bn1\.', d + 'bn1/', train_bn)
          + [(p + _BLOCK + r'conv([1-3])\.weight', f'params/{block}conv\\3/kernel', 'conv'),
             (p + _BLOCK + r'downsample\.0\.weight', f'params/{block}downsample_conv/kernel', 'conv')]
          + _bn_rules(p + _BLOCK + r'bn([1-3])\.', block + r'bn\3/', train_bn)
          + _bn_rules(p + _BLOCK + r'downsample\.1\.', block + 'downsample_bn/', train_bn))


def expected(model_cfg, modules):
  """Abstract variables of COST(model_cfg) restricted to the given top-level modules."""
  shapes = cost.variable_shapes(model_cfg)
  return {col: {m: tree[m] for m in modules if m in tree} for col, tree in shapes.items()}


def convert_state(state, model_cfg, rules, ignore, modules, source):
  """state dict -> (flat, report): renamed, then checked complete and shape-exact for `modules`."""
  flat, report = core.convert_state_dict(state, rules, ignore, source)
  names = {dst: src for src, dst in report['converted']}
  core.check_shapes(flat, expected(model_cfg, modules), source, names=names)
  return flat, report


def convert_resnet(path, model_cfg):
  """A torchvision ResNet-50 .pth (a state dict) -> (flat trunk variables, report).

  `model_cfg` (config.model) gives the trunk's shapes and backbone.train_bn. Raises
  core.ConversionError naming each unexpected, missing or mis-shaped tensor.
  """
  state = core.load_torch_file(path)
  if not isinstance(state, dict):
    raise core.ConversionError(f'{path}: expected a state dict, got {type(state).__name__}')
  return convert_state(state, model_cfg, resnet_rules('', model_cfg.backbone.train_bn), IGNORE,
                       ('backbone',), path)
