"""The COST network: shapes for both configs and all token modes, geometry of the token conv and the
sine encoding against hand-computed values, determinism, jit, gradients, frozen BatchNorm, and the
tracker's cached path equal to the full forward pass."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from configs import cost_r50
from configs import cost_tiny
from cost_jax import pretrained
from cost_jax import summary
from cost_jax.models import cost
from cost_jax.models.position_encoding import sine_position_encoding
from cost_jax.models.fusion import VLTransformer
from cost_jax.models.heads import DenseHead
from cost_jax.models.resnet import ResNetTrunk
from cost_jax.models.token_conv import TokenConv


def rel(a, b):
  return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(np.asarray(b)))


def tiny_model_cfg(**token):
  """cost_tiny with a random (not pretrained) text encoder and the paper's token geometry (search 160
  -> 20x20 tokens, 40 text tokens; the demo config uses 128 -> 16x16 and 24): shapes only, no file
  reads."""
  cfg = cost_tiny.get_config().model
  cfg.text.pretrained_dir = ''
  cfg.search_size, cfg.token.grid, cfg.text.max_len = 160, 20, 40
  cfg.token.update(token)
  return cfg


def micro_model_cfg():
  """The same architecture shrunk further for numeric tests on a loaded 2-core CPU (400 tokens kept)."""
  cfg = tiny_model_cfg()
  cfg.template_size, cfg.search_size, cfg.hidden_dim = 32, 160, 16
  cfg.backbone.update(stem_width=8, widths=(4, 8, 8), blocks=(1, 1, 2))
  cfg.visual.update(num_layers=1, num_heads=2, mlp_dim=32, dropout=0.1)
  cfg.text.update(vocab_size=50, hidden=16, num_layers=1, num_heads=2, intermediate=32,
                  max_position=16, max_len=8, dropout=0.1)
  cfg.vl.update(num_layers=1, num_heads=2, mlp_dim=32, dropout=0.1)
  cfg.coa.dim = 8
  cfg.head.cls_hidden = 16
  return cfg


def inputs(cfg, batch=2, seed=0):
  """Random uint8 images and ids; the second example has 3 padding tokens."""
  rng = np.random.default_rng(seed)
  length = cfg.text.max_len
  mask = np.ones((batch, length), np.int32)
  mask[1, length - 3:] = 0
  ids = rng.integers(1, cfg.text.vocab_size, (batch, length)).astype(np.int32) * mask
  return (rng.integers(0, 256, (batch, cfg.template_size, cfg.template_size, 3), dtype=np.uint8),
          rng.integers(0, 256, (batch, cfg.search_size, cfg.search_size, 3), dtype=np.uint8),
          ids, mask)


def abstract_forward(cfg, batch=2, **kwargs):
  model = cost.COST(cfg)
  variables = cost.variable_shapes(cfg)
  return jax.eval_shape(lambda v, *x: model.apply(v, *x, **kwargs), variables,
                        *cost.dummy_inputs(cfg, batch))


@pytest.fixture(scope='module')
def micro():
  cfg = micro_model_cfg()
  model = cost.COST(cfg)
  variables = pretrained.init_variables(model, jax.random.key(0))
  apply = jax.jit(model.apply, static_argnames=('train', 'return_attention'))
  return cfg, model, variables, apply


# ------------------------------------------------------------------------------------- shapes

@pytest.mark.parametrize('mode,search', [('resample', 160), ('valid_dilated', 256),
                                         ('stride2_320', 320)])
def test_tiny_shapes_every_token_mode(mode, search):
  cfg = tiny_model_cfg(mode=mode)
  cfg.search_size = search
  d, heads, length = cfg.hidden_dim, cfg.vl.num_heads, cfg.text.max_len
  outputs, inter = abstract_forward(cfg, return_attention=True)
  assert outputs['logits'].shape == (2, 400) and outputs['boxes'].shape == (2, 400, 4)
  assert inter['visual_tokens'].shape == (2, 400, d)
  assert inter['text_tokens'].shape == (2, length, d)
  assert inter['obj_attention'].shape == (2, heads, 1 + length + 400) == (2, heads, 441)
  assert inter['coa_visual'].shape == inter['coa_text'].shape == (2, cfg.coa.dim)
  assert inter['obj'].shape == (2, d) and inter['logit_scale'].shape == ()


def test_token_mode_with_wrong_search_size_says_so():
  cfg = tiny_model_cfg(mode='valid_dilated')  # needs a 32x32 map; search 160 gives 20x20
  with pytest.raises(ValueError, match='check model.search_size'):
    cost.variable_shapes(cfg)


def test_r50_shapes_and_parameter_count():
  cfg = cost_r50.get_config().model
  model = cost.COST(cfg)
  variables = cost.variable_shapes(cfg)
  outputs, inter = jax.eval_shape(lambda v, *x: model.apply(v, *x, return_attention=True), variables,
                                  *cost.dummy_inputs(cfg, 1))
  assert outputs['logits'].shape == (1, 400) and outputs['boxes'].shape == (1, 400, 4)
  assert inter['visual_tokens'].shape == (1, 400, 256) and inter['text_tokens'].shape == (1, 40, 256)
  assert inter['obj_attention'].shape == (1, 8, 441)
  counts = summary.count_by_module(variables)
  total = sum(counts.values())
  assert abs(total - 146.5e6) / 146.5e6 < 0.05
  # Hand count: token conv 5*5*256*256 + 256; text_proj 768*256 + 256; CoA 256*256+256 + 768*256+256 + 1.
  assert counts['token_conv'] == 5 * 5 * 256 * 256 + 256
  assert counts['text_proj'] == 768 * 256 + 256
  assert counts['coa'] == 256 * 256 + 256 + 768 * 256 + 256 + 1


def test_obj_head_shape():
  cfg = tiny_model_cfg()
  cfg.head.type = 'obj'
  outputs, inter = abstract_forward(cfg)
  assert set(outputs) == {'boxes'} and outputs['boxes'].shape == (2, 1, 4)
  assert inter['obj'].shape == (2, cfg.hidden_dim)


# ------------------------------------------------------------------------------------- geometry

def test_sine_position_encoding_matches_detr_formula():
  h, w, dim = 3, 5, 8
  pos = np.asarray(sine_position_encoding(h, w, dim))
  half, scale = dim // 2, 2 * math.pi
  for i, j, c in [(0, 0, 0), (2, 4, 1), (1, 3, 2), (2, 1, 3), (1, 2, 4), (0, 4, 5), (2, 2, 7)]:
    value, k = ((i + 1) / (h + 1e-6), c) if c < half else ((j + 1) / (w + 1e-6), c - half)
    angle = value * scale / 10000 ** (2 * (k // 2) / half)
    assert pos[i, j, c] == pytest.approx(math.sin(angle) if k % 2 == 0 else math.cos(angle), abs=1e-6)


def _centre_tap_tokens(mode, n, search, grid=20, kernel=5):
  """Token conv with a kernel that copies channel 0 from the centre tap, on map[y, x] = x."""
  cfg = tiny_model_cfg(mode=mode).token
  x = jnp.broadcast_to(jnp.arange(n, dtype=jnp.float32)[None, None, :, None], (1, n, n, 2))
  module = TokenConv(cfg)
  params = module.init(jax.random.key(0), x)['params']
  k = np.zeros((kernel, kernel, 2, 2), np.float32)
  k[kernel // 2, kernel // 2, 0, 0] = 1.0
  params = {'conv': {'kernel': jnp.asarray(k), 'bias': jnp.zeros(2)}}
  tokens = module.apply({'params': params}, x)
  return np.asarray(tokens[0, :, 0]).reshape(grid, grid)


def test_token_conv_centres_as_documented():
  j = np.arange(20)
  # resample: bilinear 32 -> 20 with half-pixel centres samples map x = (j + 0.5) * 1.6 - 0.5.
  np.testing.assert_allclose(_centre_tap_tokens('resample', 32, 256)[0], (j + 0.5) * 1.6 - 0.5,
                             atol=1e-5)
  # valid_dilated: token j sits on map cell j + 6; stride2_320: on map cell 2j + 1.
  np.testing.assert_allclose(_centre_tap_tokens('valid_dilated', 32, 256)[0], j + 6)
  np.testing.assert_allclose(_centre_tap_tokens('stride2_320', 40, 320)[0], 2 * j + 1)


# ------------------------------------------------------------------------------------- numerics

def test_forward_values(micro):
  cfg, _, variables, apply = micro
  outputs, inter = apply(variables, *inputs(cfg), train=False, return_attention=True)
  boxes = np.asarray(outputs['boxes'])
  assert outputs['logits'].dtype == jnp.float32 and np.isfinite(np.asarray(outputs['logits'])).all()
  assert (boxes > 0).all() and (boxes < 1).all()
  np.testing.assert_allclose(np.linalg.norm(inter['coa_visual'], axis=-1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(inter['coa_text'], axis=-1), 1.0, rtol=1e-5)
  assert float(inter['logit_scale']) == pytest.approx(math.log(1 / 0.07), rel=1e-6)
  attention = np.asarray(inter['obj_attention'])
  np.testing.assert_allclose(attention.sum(-1), 1.0, rtol=1e-5)  # a distribution per head
  assert (attention[1, :, 1 + cfg.text.max_len - 3:1 + cfg.text.max_len] == 0).all()  # padding


def test_padded_text_positions_do_not_matter(micro):
  cfg, _, variables, apply = micro
  template, search, ids, mask = inputs(cfg)
  other = ids.copy()
  other[1, -3:] = 7  # different ids where the mask is 0
  a, _ = apply(variables, template, search, ids, mask, train=False, return_attention=True)
  b, _ = apply(variables, template, search, other, mask, train=False, return_attention=True)
  np.testing.assert_array_equal(np.asarray(a['boxes'][1]), np.asarray(b['boxes'][1]))


def _vl_and_heads(cfg, seed):
  """A cheap sub-network (VL transformer + dense heads, dropout live): init, forward in train mode."""
  vl = VLTransformer(cfg.vl, cfg.text.max_len, cfg.token.grid ** 2)
  head = DenseHead(cfg.head.cls_hidden)
  rng = np.random.default_rng(seed)
  text = rng.normal(size=(2, cfg.text.max_len, cfg.hidden_dim)).astype(np.float32)
  visual = rng.normal(size=(2, cfg.token.grid ** 2, cfg.hidden_dim)).astype(np.float32)
  mask = inputs(cfg)[3]

  def forward(params, key):
    fused, _ = vl.apply(params['vl'], text, mask, visual, False, rngs={'dropout': key})
    return head.apply(params['head'], fused[:, 1 + cfg.text.max_len:])['logits']

  def init(key):
    return {'vl': vl.init(key, text, mask, visual), 'head': head.init(key, visual)}
  return init, forward


def test_sub_network_deterministic_under_seed_and_jit_equals_eager():
  cfg = micro_model_cfg()
  cfg.vl.num_layers = 1
  init, forward = _vl_and_heads(cfg, 0)
  params = init(jax.random.key(0))
  jax.tree.map(np.testing.assert_array_equal, params, init(jax.random.key(0)))
  key = jax.random.key(3)
  eager = forward(params, key)
  jitted = jax.jit(forward)(params, key)
  np.testing.assert_array_equal(np.asarray(forward(params, key)), np.asarray(eager))
  assert rel(jitted, eager) <= 1e-5
  assert not np.array_equal(np.asarray(forward(params, jax.random.key(4))), np.asarray(eager))


@pytest.mark.heavy
def test_deterministic_under_seed_and_jit_equals_eager(micro):
  cfg, model, variables, apply = micro
  again = pretrained.init_variables(model, jax.random.key(0))
  jax.tree.map(np.testing.assert_array_equal, variables, again)
  x = inputs(cfg)
  key = {'dropout': jax.random.key(3)}
  a, _ = apply(variables, *x, train=True, rngs=key)
  b, _ = apply(variables, *x, train=True, rngs=key)
  c, _ = apply(variables, *x, train=True, rngs={'dropout': jax.random.key(4)})
  np.testing.assert_array_equal(np.asarray(a['logits']), np.asarray(b['logits']))
  assert not np.array_equal(np.asarray(a['logits']), np.asarray(c['logits']))  # dropout is live
  eager, _ = model.apply(variables, *x, train=False)
  jitted, _ = apply(variables, *x, train=False)
  assert rel(jitted['logits'], eager['logits']) <= 1e-5
  assert rel(jitted['boxes'], eager['boxes']) <= 1e-5


def test_track_step_equals_full_forward(micro):
  cfg, model, variables, apply = micro
  template, search, ids, mask = inputs(cfg)
  full, _ = apply(variables, template, search, ids, mask, train=False, return_attention=True)
  template_cache = jax.jit(lambda v, t: model.apply(v, t, method=cost.COST.encode_template))(
      variables, template)
  text_cache = jax.jit(lambda v, i, m: model.apply(v, i, m, method=cost.COST.encode_text))(
      variables, ids, mask)
  step = jax.jit(lambda v, t, s, x: model.apply(v, t, s, x, method=cost.COST.track_step))
  tracked = step(variables, template_cache, text_cache, search)
  assert rel(tracked['logits'], full['logits']) <= 1e-5
  assert rel(tracked['boxes'], full['boxes']) <= 1e-5
  # The step really does not run the text encoder or the template trunk, nor CoA's text side (in
  # coa.mode 'object' the step embeds its search tokens with CoA's visual projection: that stays).
  params = {k: v for k, v in variables['params'].items() if k not in ('text_encoder', 'coa')}
  if cfg.coa.get('mode', 'global') == 'object':
    params['coa'] = {k: v for k, v in variables['params']['coa'].items() if k != 'text_proj'}
  used = {'params': params, 'batch_stats': variables['batch_stats']}
  jaxpr = jax.make_jaxpr(lambda v: model.apply(v, template_cache, text_cache, search,
                                               method=cost.COST.track_step))(used)
  assert 'text_encoder' not in str(jaxpr)
  template_size = cfg.template_size // 2  # the stem's output side for the template
  assert f'1,{template_size},{template_size},' not in str(jaxpr).replace(' ', '')


def _loss(model, params, batch_stats, x, key):
  """A scalar touching every output; BatchNorm may write 'batch_stats' (returned as aux)."""
  (outputs, inter), state = model.apply({'params': params, 'batch_stats': batch_stats}, *x,
                                        train=True, rngs={'dropout': key}, mutable=['batch_stats'])
  loss = (outputs['logits'].mean() + outputs['boxes'].mean()
          + (inter['coa_visual'] * inter['coa_text']).sum() * inter['logit_scale'])
  return loss, state['batch_stats']


@pytest.mark.heavy
@pytest.mark.parametrize('train_bn', [False, True])
def test_gradients_finite_and_batchnorm_frozen(train_bn, micro):
  cfg, model, variables, _ = micro
  if train_bn:
    cfg = micro_model_cfg()
    cfg.backbone.train_bn = True
    model = cost.COST(cfg)
    variables = pretrained.init_variables(model, jax.random.key(0))
    assert 'scale' in variables['params']['backbone']['bn1']
    assert set(variables['batch_stats']['backbone']['bn1']) == {'mean', 'var'}
  else:
    assert set(variables['batch_stats']['backbone']['bn1']) == {'mean', 'var', 'scale', 'bias'}
    assert 'bn1' not in variables['params']['backbone']
  x = inputs(cfg)
  grads, batch_stats = jax.jit(jax.grad(lambda p: _loss(model, p, variables['batch_stats'], x,
                                                         jax.random.key(1)), has_aux=True))(
                                                             variables['params'])
  for path, g in traverse_util.flatten_dict(grads, sep='/').items():
    assert np.isfinite(np.asarray(g)).all(), path
  # Every trained module receives gradient (the [OBJ] token through attention; BN affine if trained).
  flat = traverse_util.flatten_dict(grads, sep='/')
  for name in ('backbone/conv1/kernel', 'visual/fusion_0/self_attn1/in_proj_kernel',
               'token_conv/conv/kernel', 'text_encoder/layer_0/output/kernel', 'text_proj/kernel',
               'vl/obj_token', 'vl/position_embedding', 'head/cls_fc2/kernel', 'coa/logit_scale'):
    assert np.abs(np.asarray(flat[name])).max() > 0, name
  if train_bn:
    assert np.abs(np.asarray(flat['backbone/bn1/scale'])).max() > 0
  # A training step that lets BatchNorm write its collection leaves it bit-identical.
  jax.tree.map(np.testing.assert_array_equal, batch_stats, variables['batch_stats'])


@pytest.mark.parametrize('train_bn', [False, True])
def test_trunk_gradients_finite_and_batchnorm_frozen(train_bn):
  """Fast version of the full-model test on the trunk alone (the only module with BatchNorm)."""
  cfg = micro_model_cfg().backbone
  cfg.update(widths=(4, 4, 4), blocks=(1, 1, 1), train_bn=train_bn)
  trunk = ResNetTrunk(cfg)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(1, 32, 32, 3)), jnp.float32)
  variables = trunk.init(jax.random.key(0), x)
  affine = variables['params' if train_bn else 'batch_stats']['bn1']
  assert set(affine) >= {'scale', 'bias'} and set(variables['batch_stats']['bn1']) >= {'mean', 'var'}

  def loss(params):
    y, state = trunk.apply({'params': params, 'batch_stats': variables['batch_stats']}, x,
                           mutable=['batch_stats'])
    return (y ** 2).mean(), state['batch_stats']

  grads, batch_stats = jax.jit(jax.grad(loss, has_aux=True))(variables['params'])
  flat = traverse_util.flatten_dict(grads, sep='/')
  assert all(np.isfinite(np.asarray(g)).all() and np.abs(np.asarray(g)).max() > 0
             for g in flat.values())
  assert ('bn1/scale' in flat) == train_bn
  jax.tree.map(np.testing.assert_array_equal, batch_stats, variables['batch_stats'])


def test_sub_network_gradients_finite():
  cfg = micro_model_cfg()
  init, forward = _vl_and_heads(cfg, 1)
  params = init(jax.random.key(0))
  grads = jax.jit(jax.grad(lambda p: forward(p, jax.random.key(2)).mean()))(params)
  for path, g in traverse_util.flatten_dict(grads, sep='/').items():
    assert np.isfinite(np.asarray(g)).all(), path
  assert np.abs(np.asarray(grads['vl']['params']['obj_token'])).max() > 0


def test_bfloat16_compute_keeps_float32_params():
  cfg = micro_model_cfg()
  cfg.dtype = 'bfloat16'
  shapes = cost.variable_shapes(cfg)
  assert {leaf.dtype for leaf in jax.tree.leaves(shapes)} == {jnp.dtype(jnp.float32)}
  outputs, inter = abstract_forward(cfg)
  assert outputs['logits'].dtype == outputs['boxes'].dtype == jnp.float32
  assert inter['visual_tokens'].dtype == jnp.bfloat16
