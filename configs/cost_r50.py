"""COST with the paper's sizes: ResNet-50 trunk, BERT-base, 4+1 visual layers, 6 VL layers.

Run (multi-GPU node or TPU pod; see launch/README.md):

  python -m cost_jax.train --config=configs/cost_r50.py --workdir=runs/r50 \
      --config.data.roots.lasot=/data/LaSOT --config.data.roots.tnl2k=/data/TNL2K

Expect about 141.9M parameters (`python -m cost_jax.summary --config=configs/cost_r50.py`);
the paper reports 146.5M. The paper's sizes are configs/common.py's defaults, so this file sets only
the recipe: datasets, epochs, warmup and decay. Initial weights: `--config.train.init_weights=DIR`
(a `python -m cost_jax.convert` output: ImageNet ResNet-50 or TransT, and bert-base-uncased), else
random. `--config=configs/cost_r50.py:runlocal` shrinks the run to two CPU steps on the synthetic
set (configs/common.py: shrink_for_runlocal); tests/test_configs.py runs that command (marked heavy
for this config: the full-size model compiles for minutes on a 2-core CPU).
"""

from configs import common


def get_config(arg=None):
  config = common.base_config()  # model, crops, mesh and tracking: the paper's sizes

  # Paper recipe (TransT / TransVG defaults where the paper is silent).
  t = config.train
  t.epochs = 400
  t.num_steps = t.samples_per_epoch * t.epochs // t.batch_size
  t.warmup_steps = 1000
  t.lr_milestones = (t.num_steps * 3 // 4,)

  d = config.data
  d.weights = {'lasot': 1.0, 'tnl2k': 1.0, 'otb99_lang': 1.0, 'got10k': 1.0}
  d.splits = {'lasot': 'train', 'tnl2k': 'train', 'otb99_lang': 'train', 'got10k': 'train'}

  if arg == 'runlocal':
    common.shrink_for_runlocal(config)
  return config
