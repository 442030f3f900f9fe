"""COST with the paper's sizes: ResNet-50 trunk, BERT-base, 4+1 visual layers, 6 VL layers.

Run (multi-GPU node or TPU pod; see launch/README.md):

  python -m cost_jax.train --config=configs/cost_r50.py --workdir=runs/r50 \
      --config.data.roots.lasot=/data/LaSOT --config.data.roots.tnl2k=/data/TNL2K

Expect about 141.9M parameters (`python -m cost_jax.summary --config=configs/cost_r50.py`);
the paper reports 146.5M. `--config=configs/cost_r50.py:runlocal` shrinks the run to a few CPU steps
on the synthetic set so that this docstring's command is exercised by a test.
"""

import ml_collections

from configs import common


def get_config(arg=None):
  config = common.base_config()
  m = config.model
  m.template_size = 128
  m.search_size = 256
  m.hidden_dim = 256

  m.backbone.stem_width = 64
  m.backbone.widths = (64, 128, 256)
  m.backbone.blocks = (3, 4, 6)
  m.backbone.layer3_dilations = 'transt'
  m.backbone.train_bn = False

  m.visual.num_layers = 4
  m.visual.num_heads = 8
  m.visual.mlp_dim = 2048
  m.visual.dropout = 0.1

  m.token.mode = 'resample'
  m.token.grid = 20
  m.token.kernel = 5
  m.token.dilation = 3

  # BERT-base uncased (weights from `python -m cost_jax.convert --bert=...`).
  m.text.vocab_size = 30522
  m.text.hidden = 768
  m.text.num_layers = 12
  m.text.num_heads = 12
  m.text.intermediate = 3072
  m.text.max_position = 512
  m.text.type_vocab = 2
  m.text.layer_norm_eps = 1e-12
  m.text.max_len = 40
  m.text.layers_averaged = 1
  m.text.pretrained_dir = ''  # a Hugging Face BERT folder; '' = random init

  m.vl.num_layers = 6
  m.vl.num_heads = 8
  m.vl.mlp_dim = 2048
  m.vl.dropout = 0.1

  # Paper recipe (TransT / TransVG defaults where the paper is silent).
  t = config.train
  t.batch_size = 14
  t.samples_per_epoch = 60_000
  t.epochs = 400
  t.num_steps = t.samples_per_epoch * t.epochs // t.batch_size
  t.lr = 1e-4
  t.warmup_steps = 1000
  t.lr_milestones = (t.num_steps * 3 // 4,)
  t.init_weights = ''  # folder written by cost_jax.convert (ImageNet ResNet-50 / TransT + BERT)

  d = config.data
  d.weights = {'lasot': 1.0, 'tnl2k': 1.0, 'otb99_lang': 1.0, 'got10k': 1.0}
  d.splits = {'lasot': 'train', 'tnl2k': 'train', 'otb99_lang': 'train', 'got10k': 'train'}

  if arg == 'runlocal':
    common.shrink_for_runlocal(config)
  return config
