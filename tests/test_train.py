"""The sharded update step and the training loop.

Fast tests use `StubCOST`, a few-layer module with COST's apply contract (same outputs,
intermediates and top-level parameter groups), so the mesh/optimiser/loss machinery is checked in
seconds; tests marked heavy repeat the properties with the real (narrowed) COST. Multi-device runs
happen in subprocesses with fake CPU devices.
"""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from tests.test_coa_sharded import run_with_devices


class StubCOST(nn.Module):
  """COST's contract on a tiny network: 8x8 patch conv + frozen BN ('backbone'), embedding
  ('text_encoder'), dense token head and CoA embeddings with a clipped logit_scale ('coa')."""
  cfg: ml_collections.ConfigDict

  @nn.compact
  def __call__(self, template, search, text_ids, text_mask, train=False, return_attention=False):
    cfg, d = self.cfg, 16
    norm = lambda x: (x.astype(jnp.float32) / 255.0 - 0.5)
    stride = cfg.search_size // cfg.token.grid
    with_backbone = nn.Conv(d, (stride, stride), strides=(stride, stride), name='backbone')
    visual = with_backbone(norm(search))
    visual = nn.BatchNorm(use_running_average=True, name='bn')(visual)
    visual = visual.reshape(visual.shape[0], -1, d) + nn.Dense(d, name='template')(
        norm(template).mean(axis=(1, 2)))[:, None]
    mask = text_mask.astype(jnp.float32)[..., None]
    words = nn.Embed(cfg.text.vocab_size, d, name='text_encoder')(text_ids)
    text = (words * mask).sum(1) / jnp.maximum(mask.sum(1), 1.0)
    fused = nn.Dropout(0.1, deterministic=not train)(nn.gelu(nn.Dense(d, name='fuse')(
        visual + nn.Dense(d, name='text_proj')(text)[:, None])))
    outputs = {'logits': nn.Dense(1, name='cls')(fused)[..., 0],
               'boxes': nn.sigmoid(nn.Dense(4, name='box')(fused))}
    unit = lambda x: x / jnp.linalg.norm(x, axis=-1, keepdims=True)
    scale = self.param('logit_scale', lambda _: jnp.asarray(cfg.coa.logit_scale_init))
    inter = {'coa_visual': unit(nn.Dense(8, name='coa_v')(visual.mean(1))),
             'coa_text': unit(nn.Dense(8, name='coa_t')(text)),
             'logit_scale': jnp.clip(scale, 0.0, cfg.coa.logit_scale_max)}
    return outputs, inter


def tiny_config(batch_size=8, optimizer='adamw', pretrained_vocab=False):
  """configs/cost_tiny.py:runlocal (a two-step run on the synthetic set) with the model narrowed
  further (random text encoder) and the given batch, for seconds-long tests."""
  from configs import cost_tiny
  from cost_jax import pretrained
  config = cost_tiny.get_config('runlocal')
  m = config.model
  m.backbone.stem_width, m.backbone.widths, m.backbone.blocks = 8, (8, 8, 16), (1, 1, 1)
  m.hidden_dim, m.visual.mlp_dim, m.vl.mlp_dim, m.coa.dim, m.head.cls_hidden = 32, 64, 64, 16, 32
  m.visual.num_heads = m.vl.num_heads = 2
  m.vl.num_layers = 1
  m.text.update(dict(pretrained_dir='', hidden=32, num_layers=1, num_heads=2, intermediate=64,
                     max_position=64, max_len=12))
  if pretrained_vocab:  # the stream tokenises sentences with the MiniLM vocab
    m.text.vocab_path = pretrained.minilm_dir() + '/vocab.txt'
  else:
    m.text.vocab_size = 512
  config.train.update(dict(batch_size=batch_size, optimizer=optimizer, warmup_steps=1,
                           grad_clip=0.0))
  return config


def random_batch(config, seed=0):
  """A global batch of the stream's layout with random content; texts repeated across sequences."""
  rng = np.random.default_rng(seed)
  b, m = config.train.batch_size, config.model
  lengths = rng.integers(3, m.text.max_len, b)
  mask = (np.arange(m.text.max_len)[None] < lengths[:, None]).astype(np.int32)
  box = np.concatenate([rng.uniform(0.3, 0.7, (b, 2)), rng.uniform(0.05, 0.3, (b, 2))], -1)
  text_key = np.arange(b, dtype=np.int32)
  text_key[1::3] = text_key[0]
  return {
      'template': rng.integers(0, 256, (b, m.template_size, m.template_size, 3), dtype=np.uint8),
      'search': rng.integers(0, 256, (b, m.search_size, m.search_size, 3), dtype=np.uint8),
      'search_box': box.astype(np.float32),
      'text_ids': (rng.integers(1, m.text.vocab_size, (b, m.text.max_len)) * mask).astype(np.int32),
      'text_mask': mask, 'text_key': text_key,
      'sequence_key': np.arange(b, dtype=np.int32) // 2,
  }


def one_step(config, shape, model):
  """(params before, params after, loss) of one train step on a mesh of `shape`."""
  from cost_jax import sharding, train
  config.mesh.shape = shape
  mesh = sharding.make_mesh(config.mesh, jax.devices()[:shape[0] * shape[1]])
  state, shardings, tx = train.create_train_state(config, model, jax.random.PRNGKey(0), mesh)
  before = jax.device_get(state.params)
  step = train.make_train_step(config, model, tx, mesh, shardings)
  batch = jax.device_put(random_batch(config), sharding.batch_sharding(mesh, config.mesh))
  state, metrics = step(state, batch)
  return before, jax.device_get(state.params), float(metrics['loss'])


def compare_meshes(optimizer, lr, stub, shapes=((8, 1), (4, 2))):
  """One step on (1,1) and each of `shapes` -> {mesh: parity numbers against (1,1)}."""
  from cost_jax.models import cost
  runs = {}
  for shape in [(1, 1), *shapes]:
    config = tiny_config(optimizer=optimizer)
    config.train.lr = lr
    if shape == (4, 2):
      config.mesh.fsdp_min_size = 64  # really shard parameters over 'fsdp'
    model = StubCOST(config.model) if stub else cost.COST(config.model)
    runs[shape] = one_step(config, shape, model)
  flat = lambda t: np.concatenate([np.ravel(x) for x in jax.tree.leaves(t)])
  p0, p_ref, loss_ref = (flat(runs[(1, 1)][0]), flat(runs[(1, 1)][1]), runs[(1, 1)][2])
  out = {}
  for shape in shapes:
    q0, p, loss = flat(runs[shape][0]), flat(runs[shape][1]), runs[shape][2]
    out[str(shape)] = {
        'init_equal': bool(np.array_equal(p0, q0)),
        'loss_rel': abs(loss - loss_ref) / abs(loss_ref),
        'param_rel': float(np.linalg.norm(p - p_ref) / np.linalg.norm(p_ref)),
        'update_rel': float(np.linalg.norm((p - q0) - (p_ref - p0)) / np.linalg.norm(p_ref - p0)),
        'max_dp': float(np.max(np.abs(p - p_ref))),
        'moved': float(np.max(np.abs(p_ref - p0))),
    }
  return out


MESHES = """
import json
from tests.test_train import compare_meshes
print(json.dumps({{opt: compare_meshes(opt, lr, stub={stub}, shapes={shapes})
                  for opt, lr in {runs}}}))
"""
RUNS = [('sgd', 0.5), ('adamw', 1e-3)]


def check_mesh_parity(out, shapes):
  for shape in map(str, shapes):
    sgd, adamw = out['sgd'][shape], out['adamw'][shape]
    assert sgd['init_equal'] and adamw['init_equal']
    assert sgd['loss_rel'] <= 1e-6 and adamw['loss_rel'] <= 1e-6, out
    assert sgd['param_rel'] <= 1e-6 and sgd['update_rel'] <= 1e-5, out
    assert sgd['moved'] > 1e-3  # the step really changed the parameters
    assert adamw['max_dp'] <= 0.1 * 1e-3, out


def test_one_step_same_on_meshes_4x2_1x1_stub_model():
  """Fast variant: batch over both axes and parameters FSDP-sharded, against one device."""
  shapes = [(4, 2)]
  check_mesh_parity(run_with_devices(MESHES.format(stub=True, runs=RUNS, shapes=shapes), 8),
                    shapes)


@pytest.mark.heavy
@pytest.mark.parametrize('stub', [True, False], ids=['stub', 'cost'])
def test_one_step_same_on_meshes_8x1_4x2_1x1(stub):
  shapes = [(8, 1), (4, 2)]
  code = MESHES.format(stub=stub, runs=RUNS, shapes=shapes)
  check_mesh_parity(run_with_devices(code, 8, timeout=3600), shapes)


def test_param_specs_shard_over_fsdp_by_rules():
  from cost_jax import sharding
  from configs import common
  cfg = common.base_config().mesh
  cfg.fsdp_min_size = 100
  cfg.param_rules = (('text_encoder', 'replicate'), ('.*', 'fsdp'))
  spec = lambda name, shape: sharding.param_spec(name, shape, cfg, 4)
  P = jax.sharding.PartitionSpec
  assert spec('params/vl/dense/kernel', (64, 256)) == P(None, 'fsdp')  # largest divisible dim
  assert spec('params/vl/dense/kernel', (3, 6)) == P()  # below fsdp_min_size
  assert spec('params/text_encoder/kernel', (64, 256)) == P()  # replicated by rule
  assert spec('params/x/kernel', (63, 7)) == P()  # nothing divisible by 4
  assert sharding.param_spec('params/vl/dense/kernel', (64, 256), cfg, 1) == P()  # no fsdp axis
  cfg.shape = (-1, 2)
  assert sharding.mesh_shape(cfg, 8) == (4, 2)
  with pytest.raises(ValueError):
    sharding.mesh_shape(cfg, 7)
  cfg.shape = (1, 1)
  assert sharding.make_mesh(cfg, jax.devices()[:1]).shape == {'data': 1, 'fsdp': 1}


LOSS_FALLS = """
import json
from configs import cost_tiny
from cost_jax import train

config = cost_tiny.get_config()
config.data.roots.synthetic = '{data}'
config.train.update(dict(num_steps={steps}, batch_size=8, log_every=1, checkpoint_every={steps},
                         warmup_steps=20, lr_milestones=()))
train.train_and_checkpoint(config, '{workdir}')
print(json.dumps({{'ok': True}}))
"""


@pytest.mark.heavy
def test_tiny_config_loss_falls_within_a_few_hundred_cpu_steps(tmp_path):
  """configs/cost_tiny.py (real COST, pretrained MiniLM) on synthetic data: the mean loss of the
  last 50 steps is well below that of the first 50 (tens of minutes on a 2-core CPU)."""
  from input_pipeline import synthetic
  synthetic.generate(str(tmp_path / 'data'), 'vlsot', videos=12, seed=0, verbose=False)
  steps = 300
  code = LOSS_FALLS.format(data=tmp_path / 'data', workdir=tmp_path / 'run', steps=steps)
  run_with_devices(code, 1, timeout=7200)
  with open(tmp_path / 'run' / 'metrics.jsonl') as f:
    losses = [json.loads(line)['loss'] for line in f]
  first, last = np.mean(losses[:50]), np.mean(losses[-50:])
  print(f'tiny loss: first 50 steps {first:.3f}, last 50 steps {last:.3f}')
  assert last < 0.8 * first, losses


def test_init_weights_from_a_convert_output_are_merged(tmp_path):
  """config.train.init_weights = a folder written by cost_jax.convert: its tensors replace the
  fresh initialisation, everything else keeps its init."""
  from cost_jax import sharding, train
  from cost_jax.convert import core
  config = tiny_config(batch_size=1)
  config.mesh.shape = (1, 1)
  mesh = sharding.make_mesh(config.mesh, jax.devices()[:1])
  model = StubCOST(config.model)
  fresh, _, _ = train.create_train_state(config, model, jax.random.PRNGKey(0), mesh)
  kernel = np.arange(16 * 8, dtype=np.float32).reshape(16, 8)
  core.save_flat(str(tmp_path / 'weights.safetensors'), {'params/coa_t/kernel': kernel})
  config.train.init_weights = str(tmp_path)
  state, _, _ = train.create_train_state(config, model, jax.random.PRNGKey(0), mesh)
  np.testing.assert_array_equal(state.params['coa_t']['kernel'], kernel)
  np.testing.assert_array_equal(state.params['fuse']['kernel'], fresh.params['fuse']['kernel'])


def test_language_inputs_drop_grey_and_empty_by_hand():
  """train.language_inputs: template dropout, grey templates and empty sentences, checked by hand."""
  from cost_jax import train
  from input_pipeline import crops
  rng = np.random.default_rng(0)
  b, size, length = 64, 8, 6
  batch = {'template': rng.integers(0, 256, (b, size, size, 3), dtype=np.uint8),
           'search': rng.integers(0, 256, (b, 16, 16, 3), dtype=np.uint8),
           'text_ids': rng.integers(1000, 2000, (b, length)).astype(np.int32),
           'text_mask': np.ones((b, length), np.int32),
           'text_key': np.arange(b, dtype=np.int32)}
  blank = crops.blank_template(size, (0.485, 0.456, 0.406))
  np.testing.assert_array_equal(blank[0, 0], [124, 116, 104])  # round(255 * mean)
  empty = (np.array([101, 102, 0, 0, 0, 0], np.int32), np.array([1, 1, 0, 0, 0, 0], np.int32))
  cfg = ml_collections.ConfigDict({'template_drop': 0.0, 'template_grey': 0.0,
                                   'empty_sentences': False})
  key = jax.random.key(3)
  same = train.language_inputs(batch, key, cfg, blank, empty)
  assert all(np.array_equal(same[k], batch[k]) for k in batch)  # all off: nothing changes

  cfg.template_drop = 0.5
  out = train.language_inputs(batch, key, cfg, blank, empty)
  dropped = np.all(np.asarray(out['template']) == blank, axis=(1, 2, 3))
  kept = np.all(np.asarray(out['template']) == batch['template'], axis=(1, 2, 3))
  assert np.all(dropped | kept) and 16 <= dropped.sum() <= 48  # each example one or the other
  np.testing.assert_array_equal(out['search'], batch['search'])  # the search crop is never touched

  cfg.template_drop, cfg.template_grey = 0.0, 1.0
  grey = np.asarray(train.language_inputs(batch, key, cfg, blank, empty)['template'])
  luma = np.round(batch['template'].astype(np.float64) @ [0.299, 0.587, 0.114])
  assert np.abs(grey[..., 0].astype(int) - luma).max() <= 1  # float32 rounding at .5 only
  assert np.all(grey[..., 0] == grey[..., 1]) and np.all(grey[..., 1] == grey[..., 2])

  cfg.template_grey, cfg.empty_sentences = 0.0, True
  out = train.language_inputs(batch, key, cfg, blank, empty)
  np.testing.assert_array_equal(out['text_ids'], np.broadcast_to(empty[0], (b, length)))
  np.testing.assert_array_equal(out['text_mask'], np.broadcast_to(empty[1], (b, length)))
  assert np.all(np.asarray(out['text_key']) == 0)  # one sentence for all: no CoA negatives
