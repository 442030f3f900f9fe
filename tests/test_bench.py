"""bench/: the benchmarks keep running and measure what they say (speed itself is not tested).

Default set: the key=value line round-trips; the PyTorch loss equals cost_jax.losses; the PyTorch
optimiser groups equal cost_jax.optim's; one in-process inference measurement on a shrunk config.
Heavy: the benchmark commands themselves on the tiny config, two iterations each.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip('torch')

import jax
import jax.numpy as jnp

from bench import common
from bench import inference
from bench import torch_reference
from bench import train_step
from configs import cost_tiny
from cost_jax import losses
from cost_jax import optim
from cost_jax.models import coa
from cost_jax.models import cost

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A smaller text encoder and VL stack: same code paths, quicker compiles.
SHRINK = ['--config.model.text.pretrained_dir=', '--config.model.text.num_layers=1',
          '--config.model.text.vocab_size=1000', '--config.model.vl.num_layers=1']


def shrunk_tiny_config():
  config = cost_tiny.get_config()
  config.model.text.pretrained_dir = ''
  config.model.text.num_layers = 1
  config.model.text.vocab_size = 1000
  config.model.vl.num_layers = 1
  return config


def test_key_values_round_trip():
  values = {'jax_ms': 41.23456, 'torch_ms': 77.0, 'batch': '1,8', 'threads': 2}
  line = common.format_key_values(values)
  assert line == 'jax_ms=41.23 torch_ms=77 batch=1,8 threads=2'
  assert common.parse_key_values(line) == {'jax_ms': 41.23, 'torch_ms': 77.0, 'batch': '1,8',
                                           'threads': 2.0}


def test_matmul_precision_sets_both_frameworks():
  """--precision puts JAX and PyTorch in the same float32 matmul/conv mode; bad names are refused."""
  before = (jax.config.jax_default_matmul_precision, torch.get_float32_matmul_precision(),
            torch.backends.cudnn.allow_tf32)
  try:
    common.set_matmul_precision('float32')
    assert jax.config.jax_default_matmul_precision == 'float32'
    assert torch.get_float32_matmul_precision() == 'highest'
    assert torch.backends.cudnn.allow_tf32 is False
    common.set_matmul_precision('tf32')
    assert jax.config.jax_default_matmul_precision == 'tensorfloat32'
    assert torch.get_float32_matmul_precision() == 'high'
    assert torch.backends.cudnn.allow_tf32 is True
    with pytest.raises(ValueError, match='bf16'):
      common.set_matmul_precision('bf16')
  finally:
    jax.config.update('jax_default_matmul_precision', before[0])
    torch.set_float32_matmul_precision(before[1])
    torch.backends.cudnn.allow_tf32 = before[2]


def test_compile_with_flops_times_the_compiled_program():
  """The program returned is the compiled one (no second compile) and computes the jitted function."""
  jitted = jax.jit(lambda a, b: a @ b)
  a = np.arange(12, dtype=np.float32).reshape(3, 4)
  b = np.ones((4, 5), np.float32)
  compiled, flops = common.compile_with_flops(jitted, a, b)
  assert flops == pytest.approx(2 * 3 * 4 * 5, rel=0.5)
  np.testing.assert_array_equal(np.asarray(compiled(a, b)), a @ b)
  assert common.torch_synced(len, 'cpu') is len  # CPU PyTorch is synchronous: nothing to add


@pytest.mark.parametrize('object_mode', [False, True])
def test_torch_losses_match_cost_jax_losses(object_mode):
  """torch_losses (the PyTorch side of bench.train_step) equals cost_jax.losses on the same inputs,
  the token softmax (w_loc) included; in coa.mode 'object' also CoA on the pooled target tokens and
  the grounding loss, with one example's sentence empty."""
  config = cost_tiny.get_config()
  batch = train_step.random_batch(config, 6, seed=5)
  rng = np.random.default_rng(6)
  grid2 = config.model.token.grid ** 2
  outputs = {'logits': rng.normal(size=(6, grid2)).astype(np.float32),
             'boxes': rng.uniform(0.05, 0.95, (6, grid2, 4)).astype(np.float32)}
  embed = rng.normal(size=(2, 6, 16)).astype(np.float32)
  embed /= np.linalg.norm(embed, axis=-1, keepdims=True)
  inter = {'coa_visual': embed[0], 'coa_text': embed[1], 'logit_scale': np.float32(2.3)}
  centers = train_step.normalised_token_centers(config.model)

  ours = losses.detection_losses(outputs, batch['search_box'], centers, config.train.neg_weight)
  coa_visual = inter['coa_visual']
  if object_mode:
    tokens = rng.normal(size=(6, grid2, 16)).astype(np.float32)
    inter['coa_tokens'] = tokens / np.linalg.norm(tokens, axis=-1, keepdims=True)
    batch['text_mask'][1, 2:] = 0  # [CLS] [SEP]: no sentence, no grounding term
    positives = losses.positive_tokens(centers, batch['search_box'])
    coa_visual = losses.pool_target_tokens(inter['coa_tokens'], positives)
    ours['ground'] = losses.grounding_loss(inter['coa_tokens'], inter['coa_text'],
                                           inter['logit_scale'], positives,
                                           coa.has_sentence(batch['text_mask']))
  ours['coa'] = losses.coa_loss(coa_visual, inter['coa_text'], inter['logit_scale'],
                                batch['text_key'], batch['sequence_key'])
  ours['loss'] = losses.total_loss(ours, config.train)
  theirs = train_step.torch_losses(
      {k: torch.from_numpy(v) for k, v in outputs.items()},
      {k: torch.tensor(v) for k, v in inter.items()},
      train_step.to_torch_batch(batch), torch.from_numpy(centers), config.train)
  assert set(theirs) == set(ours) | {'loss'}
  for key in ours:
    np.testing.assert_allclose(float(ours[key]), float(theirs[key]), rtol=1e-5, err_msg=key)


def test_torch_optimizer_groups_match_optax_groups():
  """Every torch parameter gets cost_jax.optim's lr multiplier and weight-decay decision."""
  config = shrunk_tiny_config()
  reference = torch_reference.COST(config.model)
  optimizer, _ = train_step.torch_optimizer(reference, config.train, num_steps=4)
  params = jax.eval_shape(cost.init_fn(cost.COST(config.model)), jax.random.key(0))['params']
  flat_decay = {'params/' + '/'.join(str(p.key) for p in path): v for path, v in
                jax.tree_util.tree_flatten_with_path(optim.decay_mask(params))[0]}
  flat_mult = {'params/' + '/'.join(str(p.key) for p in path): v for path, v in
               jax.tree_util.tree_flatten_with_path(optim.lr_multipliers(params, config.train))[0]}
  flat_frozen = {'params/' + '/'.join(str(p.key) for p in path): v for path, v in
                 jax.tree_util.tree_flatten_with_path(optim.frozen_mask(params, config.train))[0]}
  rules = torch_reference.flax_name_rules(config.model)
  group_of = {id(p): g for g in optimizer.param_groups for p in g['params']}
  checked = 0
  for name, param in reference.named_parameters():
    flax_name, _ = torch_reference._flax_name(name, rules)
    if not param.requires_grad:  # frozen (train.freeze_text): no group here, frozen in optax
      assert id(param) not in group_of and flat_frozen[flax_name], name
      checked += 1
      continue
    group = group_of[id(param)]
    assert (group['weight_decay'] > 0) == flat_decay[flax_name], name
    assert group['initial_lr'] == pytest.approx(config.train.lr * flat_mult[flax_name]), name
    checked += 1
  assert checked == len(flat_decay)


def test_inference_measurement_in_process():
  """One batch-1 measurement on a shrunk config: the step is cheaper than the full forward and the
  key=value summary parses back with every figure."""
  config = shrunk_tiny_config()
  model, variables, reference = inference.build_models(config.model)
  result = inference.measure_batch(model, variables, reference, 1, iters=1, warmup=0,
                                   with_compile=False, with_stages=False)
  assert 0 < result['step_flops'] < result['full_flops']
  line = common.format_key_values(inference.summary_values({1: result}, 10.0, 2))
  values = common.parse_key_values(line)
  assert values['speedup_vs_torch'] == pytest.approx(values['torch_ms'] / values['jax_ms'], rel=1e-2)
  assert 0 < values['step_flops_fraction'] < 1


def run_benchmark(module, *args):
  """Runs `python -m module args` in the repo; returns the parsed last line of stdout."""
  env = dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='2')
  proc = subprocess.run([sys.executable, '-m', module, *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=1800)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return common.parse_key_values(proc.stdout.strip().splitlines()[-1])


@pytest.mark.heavy
def test_inference_benchmark_smoke_tiny():
  values = run_benchmark('bench.inference', '--config=configs/cost_tiny.py', '--iters=2',
                         '--warmup=1', '--batch=1,2', '--notorch_compile', '--peak_size=256',
                         *SHRINK)
  for key in ('jax_ms', 'torch_ms', 'speedup_vs_torch', 'peak_fraction', 'step_flops_fraction',
              'jax_ms_b2', 'torch_ms_b2'):
    assert values[key] > 0, key


@pytest.mark.heavy
def test_train_step_benchmark_smoke_tiny():
  values = run_benchmark('bench.train_step', '--config=configs/cost_tiny.py', '--iters=2',
                         '--warmup=1', '--batch=2', '--peak_size=256', *SHRINK)
  for key in ('jax_pairs_per_s', 'torch_pairs_per_s', 'speedup_vs_torch', 'peak_fraction'):
    assert values[key] > 0, key
  assert values['batch'] == 2
