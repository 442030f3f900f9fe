"""bench/torch_reference.py: the PyTorch COST equals the Flax COST on the same (random) weights.

Whole-model parity is the project's end-to-end correctness check: head outputs and intermediates agree
with ‖Δ‖/‖ref‖ ≤ 1e-4 (float32). The paper config runs under --heavy; the default set runs the tiny
config with a 1-layer text encoder (same code paths, quicker to compile).
"""

import numpy as np
import pytest

torch = pytest.importorskip('torch')

import jax
import jax.numpy as jnp

from bench import torch_reference
from configs import cost_r50, cost_tiny
from cost_jax import pretrained
from cost_jax.convert import core
from cost_jax.models import cost
from cost_jax.models.token_conv import TokenConv

TOLERANCE = 1e-4


def relative_error(ours, reference):
  reference = reference.detach().numpy() if hasattr(reference, 'detach') else np.asarray(reference)
  return float(np.linalg.norm(np.asarray(ours, np.float64) - reference)
               / max(np.linalg.norm(reference), 1e-30))


def small_tiny_config(coa_mode=None):
  """cost_tiny with a random 1-layer, 1000-word text encoder (no pretrained load); coa_mode sets
  model.coa.mode ('object' also moves map_scale off its init, so the map's weight is tested)."""
  cfg = cost_tiny.get_config().model
  cfg.text.pretrained_dir = ''
  cfg.text.num_layers = 1
  cfg.text.vocab_size = 1000
  if coa_mode is not None:
    cfg.coa.mode = coa_mode
    cfg.coa.map_scale_init = 3.7
  return cfg


def randomise_batch_stats(variables, seed):
  """Non-trivial frozen BatchNorm statistics and affine (init gives mean 0, var 1, scale 1)."""
  rng = np.random.default_rng(seed)
  def draw(path, x):
    name = path[-1].key
    if name == 'var':
      return jnp.asarray(rng.uniform(0.5, 2.0, x.shape), jnp.float32)
    if name == 'scale':
      return jnp.asarray(rng.uniform(0.5, 1.5, x.shape), jnp.float32)
    return jnp.asarray(rng.normal(0.0, 0.1, x.shape), jnp.float32)
  return {**variables,
          'batch_stats': jax.tree_util.tree_map_with_path(draw, variables['batch_stats'])}


def random_inputs(cfg, batch, seed):
  """uint8 crops, token ids and a mask with padding on the first example; a third example, when
  asked for, has an empty sentence ([CLS] [SEP]: no sentence map in coa.mode 'object')."""
  rng = np.random.default_rng(seed)
  template = rng.integers(0, 256, (batch, cfg.template_size, cfg.template_size, 3), np.uint8)
  search = rng.integers(0, 256, (batch, cfg.search_size, cfg.search_size, 3), np.uint8)
  ids = rng.integers(1, min(cfg.text.vocab_size, 1000), (batch, cfg.text.max_len)).astype(np.int32)
  mask = np.ones_like(ids)
  mask[0, 9:] = 0
  ids[0, 9:] = 0
  if batch > 2:
    mask[2, 2:] = 0
    ids[2, 2:] = 0
  return template, search, ids, mask


def to_torch(*arrays):
  return [torch.from_numpy(np.asarray(a)).long() if a.dtype == np.int32 else torch.from_numpy(a)
          for a in arrays]


def build_pair(cfg, seed=0):
  model = cost.COST(cfg)
  variables = randomise_batch_stats(pretrained.init_variables(model, jax.random.key(seed)), seed)
  reference = torch_reference.load_from_flax(torch_reference.COST(cfg).eval(), variables)
  return model, variables, reference


@pytest.fixture(scope='module', params=['global', 'object'])
def tiny_pair(request):
  """Both CoA modes: 'object' adds the template-free token embeddings and the sentence's map to the
  dense logits, in the full pass and in the cached per-frame step."""
  return build_pair(small_tiny_config(request.param))


def check_full_forward(model, variables, reference, inputs):
  outputs, inter = jax.jit(lambda v, *a: model.apply(v, *a))(variables, *inputs)
  with torch.no_grad():
    ref_outputs, ref_inter = reference(*to_torch(*inputs))
  errors = {k: relative_error(outputs[k], ref_outputs[k]) for k in ('logits', 'boxes')}
  errors.update({k: relative_error(inter[k], ref_inter[k]) for k in ref_inter})
  assert max(errors.values()) <= TOLERANCE, errors
  return errors


def test_full_forward_matches_torch_tiny(tiny_pair):
  model, variables, reference = tiny_pair
  check_full_forward(model, variables, reference, random_inputs(model.cfg, 3, seed=1))


def test_track_step_matches_torch_tiny(tiny_pair):
  """The cached per-frame step of both frameworks agrees (caches built by each framework)."""
  model, variables, reference = tiny_pair
  template, search, ids, mask = random_inputs(model.cfg, 3, seed=2)
  template_cache = model.apply(variables, template, method=cost.COST.encode_template)
  text_cache = model.apply(variables, ids, mask, method=cost.COST.encode_text)
  outputs = model.apply(variables, template_cache, text_cache, search, method=cost.COST.track_step)
  t_template, t_search, t_ids, t_mask = to_torch(template, search, ids, mask)
  with torch.no_grad():
    ref = reference.track_step(reference.encode_template(t_template),
                               reference.encode_text(t_ids, t_mask), t_search)
  for key in ('logits', 'boxes'):
    assert relative_error(outputs[key], ref[key]) <= TOLERANCE, key


def test_load_from_flax_names_missing_and_unused_variables(tiny_pair):
  model, variables, _ = tiny_pair
  flat = core.flatten(variables)
  missing = dict(flat)
  del missing['params/vl/obj_token']
  with pytest.raises(ValueError, match='vl.obj_token'):
    torch_reference.load_from_flax(torch_reference.COST(model.cfg), core.unflatten(missing))
  extra = dict(flat)
  extra['params/head/spare/kernel'] = np.zeros((2, 2), np.float32)
  with pytest.raises(ValueError, match='head/spare/kernel was not used'):
    torch_reference.load_from_flax(torch_reference.COST(model.cfg), core.unflatten(extra))


@pytest.mark.parametrize('mode,size', [('resample', 32), ('valid_dilated', 32), ('stride2_320', 40)])
def test_token_conv_modes_match_torch(mode, size):
  cfg = cost_r50.get_config().model.token
  cfg.mode = mode
  dim = 8
  x = np.random.default_rng(3).normal(size=(2, size, size, dim)).astype(np.float32)
  flax_conv = TokenConv(cfg)
  variables = flax_conv.init(jax.random.key(0), x)
  ours = flax_conv.apply(variables, x)
  torch_conv = torch_reference.TokenConv(cfg, dim)
  kernel = np.asarray(variables['params']['conv']['kernel'])
  with torch.no_grad():
    torch_conv.conv.weight.copy_(torch.from_numpy(np.array(kernel.transpose(3, 2, 0, 1))))
    torch_conv.conv.bias.copy_(torch.from_numpy(np.array(variables['params']['conv']['bias'])))
    ref = torch_conv(torch.from_numpy(x).permute(0, 3, 1, 2))
  assert ours.shape == (2, cfg.grid ** 2, dim)
  assert relative_error(ours, ref) <= 1e-5


@pytest.mark.heavy
def test_full_forward_matches_torch_r50():
  """The paper config (ResNet-50, BERT-base, 4+1 visual layers, 6 VL layers), random weights."""
  cfg = cost_r50.get_config().model
  model, variables, reference = build_pair(cfg)
  errors = check_full_forward(model, variables, reference, random_inputs(cfg, 1, seed=4))
  print('r50 parity', errors)
