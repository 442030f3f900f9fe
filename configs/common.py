"""Fields shared by every COST config. Each size and every design *choice* is a field here.

`cost_r50.py` and `cost_tiny.py` start from `base_config()` and set sizes. Units: crop sizes in pixels,
boxes normalised (cx, cy, w, h) inside the model and pixel (x, y, w, h) outside it.
"""

import math
import os

import ml_collections


def base_config():
  config = ml_collections.ConfigDict()
  config.seed = 0

  # ---------------------------------------------------------------- model (docs/design.md §1)
  m = config.model = ml_collections.ConfigDict()
  m.image_mean = (0.485, 0.456, 0.406)  # ImageNet, of pixel/255; the model normalises uint8 RGB
  m.image_std = (0.229, 0.224, 0.225)
  m.template_size = 128  # template crop side, px
  m.search_size = 256  # search crop side, px
  m.hidden_dim = 256  # d of both transformers
  m.dtype = 'float32'  # compute dtype: 'float32' or 'bfloat16' (parameters stay float32)

  m.backbone = ml_collections.ConfigDict()
  m.backbone.stem_width = 64
  m.backbone.widths = (64, 128, 256)  # bottleneck widths of layer1..layer3 (out = 4x)
  m.backbone.blocks = (3, 4, 6)
  m.backbone.layer3_dilations = 'transt'  # 'transt' = [2,1,1,1,1,1], 'torchvision' = [1,2,2,2,2,2], or a list
  m.backbone.train_bn = False  # False: BatchNorm fully frozen; True: affine trained, statistics frozen

  m.visual = ml_collections.ConfigDict()  # TransT feature fusion
  m.visual.num_layers = 4
  m.visual.num_heads = 8
  m.visual.mlp_dim = 2048
  m.visual.dropout = 0.1

  m.token = ml_collections.ConfigDict()  # search map -> grid x grid visual tokens
  m.token.mode = 'resample'  # 'resample' | 'valid_dilated' | 'stride2_320'
  m.token.grid = 20
  m.token.kernel = 5
  m.token.dilation = 3  # for 'valid_dilated'

  m.text = ml_collections.ConfigDict()  # BERT
  m.text.vocab_size = 30522
  m.text.hidden = 768
  m.text.num_layers = 12
  m.text.num_heads = 12
  m.text.intermediate = 3072
  m.text.max_position = 512
  m.text.type_vocab = 2
  m.text.layer_norm_eps = 1e-12
  m.text.dropout = 0.1
  m.text.max_len = 40  # [CLS] ... [SEP] padded to this
  m.text.layers_averaged = 1  # output = mean of the last k hidden layers
  m.text.pretrained_dir = ''  # Hugging Face BERT folder (config.json, model.safetensors, vocab.txt)
  m.text.vocab_path = ''  # vocab.txt; '' = <pretrained_dir>/vocab.txt

  m.coa = ml_collections.ConfigDict()  # contrastive alignment (training only)
  m.coa.dim = 256
  m.coa.logit_scale_init = math.log(1 / 0.07)
  m.coa.logit_scale_max = math.log(100.0)
  # 'global' (the paper's: mean of the fused tokens <-> sentence, training only) or 'object' (template-
  # free search tokens; the target's tokens <-> sentence; the sentence's map joins the dense logits).
  m.coa.mode = 'global'
  m.coa.map_scale_init = 1.0  # mode 'object': the sentence map's weight in the dense logits, at init

  m.vl = ml_collections.ConfigDict()  # visual-linguistic transformer
  m.vl.num_layers = 6
  m.vl.num_heads = 8
  m.vl.mlp_dim = 2048
  m.vl.dropout = 0.1

  m.head = ml_collections.ConfigDict()
  m.head.type = 'dense'  # 'dense' (400 logits + boxes) | 'obj' (one box from [OBJ])
  m.head.cls_hidden = 256
  m.head.text_score = False  # add heads.TextScore (token . sentence) to the dense logits (a *choice*)

  # ---------------------------------------------------------------- crops (docs/design.md §2)
  c = config.crop = ml_collections.ConfigDict()
  c.size_rule = 'transt'  # 'transt' | 'pytracking'
  c.template_factor = 2.0
  c.search_factor = 4.0
  c.template_min_side_px = 32.0
  c.search_min_side_px = 64.0

  # ---------------------------------------------------------------- data (docs/design.md §2)
  d = config.data = ml_collections.ConfigDict()
  # Dataset roots: one place. Overridable by flag (--config.data.roots.lasot=...) or by the
  # environment variable COST_DATA_<NAME> (e.g. COST_DATA_LASOT); see input_pipeline.readers.
  d.roots = ml_collections.ConfigDict({
      name: os.environ.get('COST_DATA_' + name.upper(), '')
      for name in ('lasot', 'lasot_ext', 'tnl2k', 'otb99_lang', 'vlsot230', 'vlsot270', 'got10k',
                   'synthetic')
  })
  d.weights = {'synthetic': 1.0}  # dataset name -> sampling weight
  d.splits = {'synthetic': 'train'}
  d.source = 'raw'  # 'raw' folders or 'tfds' (array_record, for pods)
  d.tfds_dir = ''
  d.max_gap = 100  # frames between template and search
  d.center_jitter = 3.0  # TransT units
  d.scale_jitter = 0.25
  d.template_center_jitter = 0.0
  d.template_scale_jitter = 0.0
  d.brightness = 0.2
  d.grayscale_prob = 0.05
  d.num_parallel_calls = -1  # tf.data.AUTOTUNE
  d.prefetch = 2

  # ---------------------------------------------------------------- training (docs/design.md §3)
  t = config.train = ml_collections.ConfigDict()
  t.batch_size = 14  # global
  t.num_steps = 1000
  t.samples_per_epoch = 60_000
  t.epochs = 1
  t.lr = 1e-4
  t.backbone_lr_mult = 0.1
  t.text_lr_mult = 0.1
  t.weight_decay = 1e-4
  t.warmup_steps = 100
  t.lr_milestones = ()
  t.lr_decay = 0.1
  t.grad_clip = 0.1
  # The text encoder never changes (optim.frozen_mask: no optimiser state, zero updates, and the
  # step takes no gradient through it).
  t.freeze_text = False
  # With freeze_text and text dropout 0: the encoder's features cached per sentence on the host
  # (cost_jax.text_cache), so the step skips the encoder (the same loss and updates).
  t.cache_text = True
  t.neg_weight = 0.0625
  t.w_cls = 8.334
  t.w_l1 = 5.0
  t.w_giou = 2.0
  t.w_coa = 1.0
  t.w_loc = 0.0  # softmax localisation over the tokens (losses.localisation_loss; a *choice*, off in TransT)
  t.init_weights = ''
  t.log_every = 10
  t.checkpoint_every = 200
  t.keep_checkpoints = 3
  # Language (docs/design.md §6): a share of templates replaced by the blank template, so the
  # sentence alone must find the target (train.language_inputs); empty_sentences trains without
  # language (ablation).
  t.template_drop = 0.0
  t.template_grey = 0.0  # a share of templates in grey (search crops keep their colour)
  t.empty_sentences = False
  t.optimizer = 'adamw'  # 'adamw' | 'sgd' (plain SGD: sharding-parity tests)
  t.max_minutes = 0.0  # > 0: save and stop after this much training time (rerun to continue)
  t.progress_bar = False  # a tqdm bar over the steps (process 0) beside the log lines

  # ---------------------------------------------------------------- mesh (docs/design.md §3)
  config.mesh = ml_collections.ConfigDict()
  config.mesh.shape = (-1, 1)  # ('data', 'fsdp'); -1 = all remaining devices
  config.mesh.axes = ('data', 'fsdp')
  config.mesh.fsdp_min_size = 2 ** 18  # parameters smaller than this stay replicated
  # Parameter sharding by name (first matching regex on 'params/backbone/conv1/kernel'-style names
  # wins): 'fsdp' shards the largest dimension divisible by the fsdp axis, 'replicate' copies it.
  # E.g. (('text_encoder', 'replicate'), ('.*', 'fsdp')).
  config.mesh.param_rules = (('.*', 'fsdp'),)
  # Activations carry no sharding hints: XLA propagates the batch's and the parameters' shardings.

  # ---------------------------------------------------------------- tracking (docs/design.md §4)
  k = config.track = ml_collections.ConfigDict()
  k.hann_weight = 0.49
  k.score_map = 'sigmoid'  # tracker.token_scores: 'sigmoid' | 'softmax'
  k.min_size_px = 1.0
  k.size_update_rate = 1.0
  k.batch_slots = 8
  k.pad_multiple = 64  # batched evaluation pads frames to a common shape, rounded up to this (px)
  # Sentence-only start (cost_jax.grounding): search windows tile the first frame at sides
  # search_min_side_px * ground_scale_step^k up to the frame's longer side, neighbours overlapping by at
  # least ground_overlap of a side; ground_batch windows a call.
  k.ground_scale_step = 2.0
  k.ground_overlap = 0.5
  k.ground_batch = 16
  return config


def shrink_for_runlocal(config):
  """Two CPU steps of batch 2 on the synthetic set (data.roots.synthetic), the model unchanged: what
  tests/test_configs.py runs for every config, so that docstring commands stay alive. A config
  without a vocabulary gets bert-base-uncased's, which ships with the MiniLM package (offline)."""
  if not (config.model.text.vocab_path or config.model.text.pretrained_dir):
    from cost_jax import pretrained  # imported here: it loads JAX, which reading a config need not
    config.model.text.vocab_path = os.path.join(pretrained.minilm_dir(), 'vocab.txt')
  config.train.batch_size = 2
  config.train.num_steps = 2
  config.train.warmup_steps = 1
  config.train.log_every = 1
  config.train.checkpoint_every = 2
  config.data.weights = {'synthetic': 1.0}
  config.data.splits = {'synthetic': 'train'}
  return config


class ConfigError(ValueError):
  """A config field holds a value training cannot use; the message names the field."""


# What `validate` checks: field -> allowed values, and fields that must be numbers in a range.
CHOICES = {
    'model.dtype': ('float32', 'bfloat16'),
    'model.token.mode': ('resample', 'valid_dilated', 'stride2_320'),
    'model.coa.mode': ('global', 'object'),
    'model.head.type': ('dense', 'obj'),
    'crop.size_rule': ('transt', 'pytracking'),
    'data.source': ('raw', 'tfds'),
    'train.optimizer': ('adamw', 'sgd'),
    'track.score_map': ('sigmoid', 'softmax'),
}
POSITIVE_INTS = ('model.template_size', 'model.search_size', 'model.hidden_dim', 'model.text.max_len',
                 'train.batch_size', 'train.num_steps', 'train.log_every', 'train.checkpoint_every',
                 'train.keep_checkpoints', 'track.batch_slots')
NON_NEGATIVE_INTS = ('train.warmup_steps', 'data.max_gap')
NON_NEGATIVE = ('train.lr', 'train.weight_decay', 'train.grad_clip', 'train.lr_decay',
                'train.max_minutes', 'train.backbone_lr_mult', 'train.text_lr_mult')
PROBABILITIES = ('train.template_drop', 'train.template_grey', 'data.grayscale_prob')


def _field(config, name):
  """config's value at dotted `name`, or KeyError when a config has no such field."""
  value = config
  for part in name.split('.'):
    value = value[part]
  return value


def _number(value, integer=False):
  if isinstance(value, bool):
    return False
  return isinstance(value, int) if integer else isinstance(value, (int, float)) and value == value


def validate(config):
  """Raises ConfigError naming the first field whose value cannot work (a word not among the
  choices, a size or count that is not a positive integer, a rate below 0, a probability outside
  [0, 1], lr_milestones that are not step numbers); fields a config does not have are skipped.
  Training calls this before it creates anything."""
  def fields(names):
    for name in names:
      try:
        yield name, _field(config, name)
      except (KeyError, AttributeError):
        continue

  for name, value in fields(CHOICES):
    if value not in CHOICES[name]:
      raise ConfigError(f'config.{name}={value!r}: expected one of {", ".join(CHOICES[name])}')
  for name, value in fields(POSITIVE_INTS):
    if not _number(value, integer=True) or value < 1:
      raise ConfigError(f'config.{name}={value!r}: expected a positive integer')
  for name, value in fields(NON_NEGATIVE_INTS):
    if not _number(value, integer=True) or value < 0:
      raise ConfigError(f'config.{name}={value!r}: expected an integer >= 0')
  for name, value in fields(NON_NEGATIVE):
    if not _number(value) or value < 0:
      raise ConfigError(f'config.{name}={value!r}: expected a number >= 0')
  for name, value in fields(PROBABILITIES):
    if not _number(value) or not 0 <= value <= 1:
      raise ConfigError(f'config.{name}={value!r}: expected a probability in [0, 1]')
  for name, value in fields(('train.lr_milestones',)):
    steps = tuple(value) if isinstance(value, (list, tuple)) else (value,)
    if not all(_number(s, integer=True) and s > 0 for s in steps):
      raise ConfigError(f'config.{name}={value!r}: expected step numbers, e.g. 300,450 (or () for '
                        'none)')
