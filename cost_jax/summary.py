"""Parameter count of a COST config, per top-level module (shapes only, via jax.eval_shape).

  python -m cost_jax.summary --config=configs/cost_r50.py

Counting rule (PyTorch's): every leaf of 'params', plus the BatchNorm affine scale/bias that live in
'batch_stats' while frozen (torch counts BatchNorm weight/bias as parameters); BatchNorm running
mean/var are buffers in torch and are not counted. The last line is `total_params=<int>`.
"""

import math

from absl import flags
from flax import traverse_util
from ml_collections import config_flags

from cost_jax import cli
from cost_jax.models import cost

RULE = ('rule: all params + BatchNorm scale/bias (counted as parameters, as in PyTorch); '
        'BatchNorm mean/var are buffers, not counted')


def count_by_module(variables):
  """{top-level module: parameter count} under RULE, in the order the modules appear."""
  counts = {}
  for collection, tree in variables.items():
    for path, leaf in traverse_util.flatten_dict(tree).items():
      counted = collection == 'params' or (collection == 'batch_stats' and path[-1] in ('scale', 'bias'))
      counts.setdefault(path[0], 0)
      counts[path[0]] += math.prod(leaf.shape) if counted else 0
  return counts


def main(argv):
  del argv
  counts = count_by_module(cost.variable_shapes(flags.FLAGS.config.model))
  width = max(len(name) for name in counts)
  for name, n in counts.items():
    print(f'{name:<{width}}  {n:>12,d}  ({n / 1e6:.2f}M)')
  print(RULE)
  print(f'total_params={sum(counts.values())}')


if __name__ == '__main__':
  # Flags are defined only when run as a program, so importing count_by_module defines none.
  config_flags.DEFINE_config_file('config', None, 'Path to a config file.', lock_config=True)
  flags.mark_flags_as_required(['config'])
  cli.run(main)
