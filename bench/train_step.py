r"""Training throughput, JAX vs PyTorch eager: same architecture, weights, batch, loss and optimiser.

  python -m bench.train_step --config=configs/cost_tiny.py
  python -m bench.train_step --config=configs/cost_r50.py --batch=2 --iters=3 --warmup=1   # CPU
  python -m bench.train_step --config=configs/cost_tiny.py --iters=2 --warmup=1 --batch=2 \
      --peak_size=256                                                # smoke run (tests/test_bench.py)

What is timed: one whole update on a batch already in memory (random uint8 crops, boxes and token
ids; no input pipeline): forward in train mode (dropout on, BatchNorm frozen), the loss of
docs/design.md §3 (weighted BCE + L1 + GIoU over positive tokens + CoA), backward, global-norm
clipping and AdamW with the backbone and text encoder at lr x0.1 and no decay on biases, norms,
embeddings and logit_scale.
JAX: cost_jax.train.make_train_step (the trainer's own jitted, donated step) on a one-device mesh;
timed twice when cost_jax.text_cache applies (frozen, dropout-free text encoder): the encoder run in
the step, and the step fed the cached features as cost_jax.train feeds it ('jax_cached_text_ms').
PyTorch: torch_reference.COST with the same initial weights, `torch_losses` (a mirror of
cost_jax.losses, tested equal in tests/test_bench.py) and torch.optim.AdamW with the same groups.
torch.compile: the same step with the model + loss under torch.compile (inductor; AOTAutograd compiles
the backward too), the optimiser eager (--notorch_compile skips it; its compile time is printed).
float32; median step time over --iters after --warmup. FLOPs of the JAX step from XLA's cost
analysis of the compiled update (frozen parts' forward included). On a GPU the PyTorch step ends
with torch.cuda.synchronize inside the timed region; `--precision=tf32|float32` sets both
frameworks' float32 matmul/convolution mode alike (unset: each framework's default).

Batch: --batch, else config.train.batch_size. When XLA's memory analysis of the compiled step says
it needs more than the machine's available memory (MemAvailable, or the GPU's limit), the batch is
scaled down to what fits (largest even batch under 80% of it), recompiled, and the output says so
(`batch_reduced_from=` in the key=value line); --nofit_memory keeps the asked batch.
"""

import math
import os
import time

from absl import app
from absl import flags
from ml_collections import config_flags
import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.nn.functional as F
import torchvision

from bench import common
from bench import torch_reference
from cost_jax import optim
from cost_jax import sharding
from cost_jax import text_cache
from cost_jax import train
from cost_jax.models import cost
from input_pipeline import crops


def define_flags():
  """The command-line flags (defined only when run as a program)."""
  config_flags.DEFINE_config_file('config', None, 'Model and training config file.')
  flags.DEFINE_integer('batch', 0, 'Pairs per step; 0 = config.train.batch_size.')
  flags.DEFINE_integer('iters', 10, 'Timed steps (median reported).')
  flags.DEFINE_integer('warmup', 2, 'Untimed steps before timing (after compilation).')
  flags.DEFINE_boolean('torch_compile', True, 'Also time the step with torch.compile(model + loss).')
  flags.DEFINE_boolean('fit_memory', True, 'Reduce the batch when the step would not fit in memory.')
  common.define_framework_flags()


def random_batch(config, batch, seed=0):
  """A training batch of the stream's keys and dtypes (numpy): crops, boxes, ids, mask, keys."""
  cfg = config.model
  rng = np.random.default_rng(seed)
  ids = rng.integers(1, cfg.text.vocab_size, (batch, cfg.text.max_len)).astype(np.int32)
  mask = (np.arange(cfg.text.max_len)[None] < rng.integers(3, cfg.text.max_len, (batch, 1)))
  centre = rng.uniform(0.3, 0.7, (batch, 2))
  size = rng.uniform(0.02, 0.3, (batch, 2))
  return {
      'template': rng.integers(0, 256, (batch, cfg.template_size, cfg.template_size, 3), np.uint8),
      'search': rng.integers(0, 256, (batch, cfg.search_size, cfg.search_size, 3), np.uint8),
      'search_box': np.concatenate([centre, size], 1).astype(np.float32),
      'text_ids': ids * mask.astype(np.int32),
      'text_mask': mask.astype(np.int32),
      'text_key': rng.integers(0, max(batch // 2, 1), batch).astype(np.int32),
      'sequence_key': np.arange(batch, dtype=np.int32),
  }


def normalised_token_centers(model_cfg):
  """[grid^2, 2] token centres normalised to the search crop (what the trainer uses)."""
  return np.asarray(crops.token_centers(model_cfg), np.float32) / model_cfg.search_size


# ------------------------------------------------------------------------------ PyTorch side

def _xyxy(boxes):
  cx, cy, w, h = boxes.unbind(-1)
  return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)


def _localisation_per_example(logits, positives):
  """losses._localisation_per_example: -log of the softmax mass on the positive tokens, per row."""
  on_target = torch.logsumexp(logits.masked_fill(positives <= 0, float('-inf')), -1)
  return torch.logsumexp(logits, -1) - on_target


def torch_losses(outputs, inter, batch, token_centers, train_cfg):
  """cost_jax.losses in PyTorch: {'cls', 'loc', 'l1', 'giou', 'coa', 'loss'} (dense head), plus
  'ground' when inter has 'coa_tokens' (coa.mode 'object'; CoA then pools the target's tokens).

  outputs/inter: torch_reference.COST's; batch: torch tensors of random_batch's keys;
  token_centers: [T, 2] normalised.
  """
  boxes = batch['search_box']
  delta = token_centers[None] - boxes[:, None, :2]
  inside = (delta.abs() <= boxes[:, None, 2:] / 2).all(-1)
  nearest = F.one_hot((delta ** 2).sum(-1).argmin(-1), token_centers.shape[0]).bool()
  positives = torch.where(inside.any(-1, keepdim=True), inside, nearest).float()
  weights = torch.where(positives > 0, 1.0, train_cfg.neg_weight)
  bce = F.binary_cross_entropy_with_logits(outputs['logits'], positives, reduction='none')
  losses = {'cls': (weights * bce).sum() / weights.sum(),
            'loc': _localisation_per_example(outputs['logits'], positives).mean()}
  pred = outputs['boxes']
  gt = boxes[:, None].expand_as(pred)
  num_pos = positives.sum().clamp(min=1.0)
  losses['l1'] = (positives * (pred - gt).abs().sum(-1)).sum() / num_pos
  giou_loss = torchvision.ops.generalized_box_iou_loss(_xyxy(pred), _xyxy(gt), eps=1e-7)
  losses['giou'] = (positives * giou_loss).sum() / num_pos
  coa_visual = inter['coa_visual']
  if 'coa_tokens' in inter:
    tokens = inter['coa_tokens']
    coa_visual = F.normalize(torch.einsum('bv,bvc->bc', positives, tokens), dim=-1, eps=1e-12)
    has_sentence = (batch['text_mask'].sum(-1) > 2).float()
    ground_logits = inter['logit_scale'].exp() * torch.einsum('bvc,bc->bv', tokens, inter['coa_text'])
    per_example = _localisation_per_example(ground_logits, positives)
    losses['ground'] = (per_example * has_sentence).sum() / has_sentence.sum().clamp(min=1.0)
  same = ((batch['text_key'][:, None] == batch['text_key'][None])
          | (batch['sequence_key'][:, None] == batch['sequence_key'][None])).float()
  targets = same / same.sum(-1, keepdim=True)
  logits = inter['logit_scale'].exp() * coa_visual @ inter['coa_text'].T
  losses['coa'] = -((targets * logits.log_softmax(-1)).sum()
                    + (targets * logits.T.log_softmax(-1)).sum()) / (2 * logits.shape[0])
  losses['loss'] = (train_cfg.w_cls * losses['cls'] + train_cfg.w_loc * losses['loc']
                    + train_cfg.w_l1 * losses['l1'] + train_cfg.w_giou * losses['giou']
                    + train_cfg.w_coa * (losses['coa'] + losses.get('ground', 0.0)))
  return losses


def torch_optimizer(reference, train_cfg, num_steps):
  """AdamW with cost_jax.optim's groups: (backbone | text_encoder | rest) x (decay | no decay).

  Decay on Conv2d/Linear weights only (optim.decay_mask's 'kernel' leaves; attention in_proj is not a
  'kernel' there, so not here either); the learning rate follows optim.learning_rate_fn (warmup, step
  decay), tabulated for `num_steps`, through a LambdaLR; frozen text encoder when asked.
  """
  mults = {'backbone': train_cfg.backbone_lr_mult, 'text_encoder': train_cfg.text_lr_mult}
  groups = {}
  for name, param in reference.named_parameters():
    top = name.split('.')[0]
    if top == 'text_encoder' and train_cfg.freeze_text:
      param.requires_grad_(False)
      continue
    module = reference.get_submodule(name.rsplit('.', 1)[0]) if '.' in name else reference
    decay = name.endswith('.weight') and isinstance(module, (torch.nn.Conv2d, torch.nn.Linear))
    key = (mults.get(top, 1.0), decay)
    groups.setdefault(key, []).append(param)
  param_groups = [{'params': params, 'lr': train_cfg.lr * mult,
                   'weight_decay': train_cfg.weight_decay if decay else 0.0}
                  for (mult, decay), params in groups.items()]
  optimizer = torch.optim.AdamW(param_groups, lr=train_cfg.lr, betas=(0.9, 0.999), eps=1e-8)
  lrs = np.asarray(jax.vmap(optim.learning_rate_fn(train_cfg))(jnp.arange(num_steps + 1)))
  scheduler = torch.optim.lr_scheduler.LambdaLR(
      optimizer, lambda step: float(lrs[min(step, num_steps)]) / train_cfg.lr)
  return optimizer, scheduler


def torch_loss_fn(reference, train_cfg):
  """(batch, token_centers) -> the loss dict of `reference` on the batch (model + loss)."""
  def loss_fn(batch, token_centers):
    outputs, inter = reference(batch['template'], batch['search'], batch['text_ids'],
                               batch['text_mask'])
    return torch_losses(outputs, inter, batch, token_centers, train_cfg)
  return loss_fn


def torch_train_step(reference, train_cfg, compile_model=False):
  """(optimizer, scheduler, batch, token_centers) -> the loss dict (detached) of one PyTorch
  update: the loss (under torch.compile, default inductor backend, when compile_model), backward,
  clipping, the optimiser's and the scheduler's step."""
  loss_fn = torch_loss_fn(reference, train_cfg)
  if compile_model:
    loss_fn = torch.compile(loss_fn)

  def step(optimizer, scheduler, batch, token_centers):
    optimizer.zero_grad(set_to_none=True)
    losses = loss_fn(batch, token_centers)
    losses['loss'].backward()
    if train_cfg.grad_clip > 0:
      torch.nn.utils.clip_grad_norm_(reference.parameters(), train_cfg.grad_clip)
    optimizer.step()
    scheduler.step()
    return {k: v.detach() for k, v in losses.items()}
  return step


def to_torch_batch(batch, device='cpu'):
  return {k: (torch.from_numpy(v).long() if v.dtype == np.int32 else torch.from_numpy(v)).to(device)
          for k, v in batch.items()}


# ------------------------------------------------------------------------------ measurement

def available_memory_bytes():
  """Memory a step may use: the accelerator's limit, else the host's MemAvailable (None unknown)."""
  device = jax.devices()[0]
  if device.platform != 'cpu':
    stats = device.memory_stats() or {}
    return stats.get('bytes_limit')
  try:
    with open('/proc/meminfo') as f:
      for line in f:
        if line.startswith('MemAvailable:'):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return None


def step_memory_bytes(compiled):
  """Peak bytes of a compiled step by XLA's memory analysis (arguments + outputs + temporaries,
  minus donated aliases), or None when the backend gives none."""
  try:
    m = compiled.memory_analysis()
  except Exception:  # pylint: disable=broad-except  (not every backend implements it)
    return None
  if m is None:
    return None
  return (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
          - m.alias_size_in_bytes)


def fitted_batch(batch, needed, available, state_bytes):
  """The largest batch (even when > 1) whose step fits 80% of `available` bytes, assuming the
  step's memory is the state plus a per-pair part; `batch` itself when it fits."""
  budget = 0.8 * available
  if needed <= budget:
    return batch
  per_pair = max(needed - state_bytes, 1) / batch
  fit = int((budget - state_bytes) // per_pair)
  if fit > 1:
    fit -= fit % 2
  return max(min(fit, batch - 1), 1)


def _compile_step(step, state, batch, mesh, config):
  global_batch = jax.device_put(batch, sharding.batch_sharding(mesh, config.mesh))
  start = time.perf_counter()
  compiled, flops = common.compile_with_flops(step, state, global_batch)
  return compiled, flops, global_batch, time.perf_counter() - start


def measure(config, batch_size, iters, warmup, device='cpu', with_torch_compile=True,
            fit_memory=True):
  """{'jax_ms', 'torch_ms', 'torch_compile_ms', 'step_flops', 'batch', ...} for one update.

  The batch is reduced when it does not fit (fit_memory; see the module docstring): result['batch']
  is the one measured, result['batch_reduced_from'] the one asked for.
  """
  model = cost.COST(config.model)
  mesh = train.create_mesh(config)
  start = time.perf_counter()
  state, shardings, tx = train.create_train_state(config, model, jax.random.key(config.seed), mesh)
  result = {'build_s': time.perf_counter() - start}
  step = train.make_train_step(config, model, tx, mesh, shardings)
  compiled, step_flops, global_batch, compile_s = _compile_step(
      step, state, random_batch(config, batch_size), mesh, config)
  needed, available = step_memory_bytes(compiled), available_memory_bytes()
  if needed is not None:
    result['step_memory_gb'] = needed / 2 ** 30
  if fit_memory and needed is not None and available is not None:
    state_bytes = sum(x.nbytes for x in jax.tree.leaves(state))
    fit = fitted_batch(batch_size, needed, available, state_bytes)
    if fit != batch_size:
      print(f'# batch {batch_size} needs {needed / 2 ** 30:.1f} GiB by XLA\'s memory analysis, '
            f'{available / 2 ** 30:.1f} GiB available: measuring batch {fit} instead', flush=True)
      result['batch_reduced_from'] = batch_size
      batch_size = fit
      config.train.batch_size = fit
      step = train.make_train_step(config, model, tx, mesh, shardings)
      compiled, step_flops, global_batch, compile_s = _compile_step(
          step, state, random_batch(config, batch_size), mesh, config)
  batch = random_batch(config, batch_size)
  jitted = step
  step = compiled
  result.update(step_flops=step_flops, batch=batch_size, jax_compile_s=compile_s)
  print(f'# jax state built in {result["build_s"]:.1f} s, update compiled in {compile_s:.1f} s',
        flush=True)
  variables = {'params': state.params, 'batch_stats': state.batch_stats}
  host_variables = common.to_numpy_tree(variables)  # before the step donates the state
  reference = torch_reference.load_from_flax(torch_reference.COST(config.model), host_variables)
  reference = reference.train().to(device)
  holder = [state]

  def jax_update():
    holder[0], metrics = step(holder[0], global_batch)
    jax.block_until_ready(metrics)

  result['jax_ms'] = common.median_ms(jax_update, iters, warmup)
  print(f'# jax {result["jax_ms"]:.2f} ms/step', flush=True)
  if text_cache.enabled(config):  # what the trainer runs: the frozen encoder's features cached
    cached = text_cache.TextFeatureCache(config, model).add_features(batch, holder[0].params)
    cached_step, result['cached_step_flops'], cached_batch, result['jax_cached_compile_s'] = (
        _compile_step(jitted, holder[0], cached, mesh, config))

    def jax_cached_update():
      holder[0], metrics = cached_step(holder[0], cached_batch)
      jax.block_until_ready(metrics)
    result['jax_cached_ms'] = common.median_ms(jax_cached_update, iters, warmup)
    print(f'# jax, text features cached (train.cache_text): {result["jax_cached_ms"]:.2f} ms/step',
          flush=True)
  optimizer, scheduler = torch_optimizer(reference, config.train, iters + warmup)
  centers = torch.from_numpy(normalised_token_centers(config.model)).to(device)
  torch_batch = to_torch_batch(batch, device)
  eager = torch_train_step(reference, config.train)
  result['torch_ms'] = common.median_ms(common.torch_synced(
      lambda: eager(optimizer, scheduler, torch_batch, centers), device), iters, warmup)
  print(f'# torch eager {result["torch_ms"]:.2f} ms/step', flush=True)
  if with_torch_compile:
    result['torch_compile_ms'], result['torch_compile_s'], result['torch_compile_error'] = (
        torch_compiled_ms(config, host_variables, torch_batch, centers, iters, warmup, device))
    print(f'# torch.compile {result["torch_compile_ms"]:.2f} ms/step (compiled in '
          f'{result["torch_compile_s"]:.1f} s) {result["torch_compile_error"]}', flush=True)
  return result


def torch_compiled_ms(config, host_variables, torch_batch, centers, iters, warmup, device):
  """(median ms, first-call seconds, '') of the torch.compile step, or (nan, nan, reason)."""
  try:
    reference = torch_reference.load_from_flax(torch_reference.COST(config.model), host_variables)
    reference = reference.train().to(device)
    optimizer, scheduler = torch_optimizer(reference, config.train, iters + warmup + 1)
    step = torch_train_step(reference, config.train, compile_model=True)
    call = common.torch_synced(lambda: step(optimizer, scheduler, torch_batch, centers), device)
    start = time.perf_counter()
    call()
    compile_s = time.perf_counter() - start
    return common.median_ms(call, iters, warmup), compile_s, ''
  except Exception as e:  # pylint: disable=broad-except  (a missing compiler: report, keep the rest)
    return math.nan, math.nan, f'{type(e).__name__}: {str(e).splitlines()[0][:200]}'


def main(argv):
  del argv
  config = flags.FLAGS.config
  batch = flags.FLAGS.batch or config.train.batch_size
  config.train.batch_size = batch
  threads, device = common.setup_frameworks(flags.FLAGS)
  result = measure(config, batch, flags.FLAGS.iters, flags.FLAGS.warmup, device,
                   flags.FLAGS.torch_compile, flags.FLAGS.fit_memory)
  batch = result['batch']
  compiled_ms = result.get('torch_compile_ms', math.nan)
  peak = common.matmul_peak_gflops(flags.FLAGS.peak_size)
  gflops = result['step_flops'] / (result['jax_ms'] * 1e-3) / 1e9
  print(f'# bench.train_step  config={flags.FLAGS["config"].config_filename}  float32 (matmul '
        f'mode: {flags.FLAGS.precision or "framework defaults"})  batch {batch}  torch on {device}')
  print(f'# machine: {common.machine_description()}')
  print(f'# threads: PyTorch {threads}, XLA CPU default pool ({os.cpu_count()} cores)')
  print('# timed: one update (train-mode forward, loss, backward, clip, AdamW) on an in-memory batch')
  if 'batch_reduced_from' in result:
    print(f'# batch reduced from {result["batch_reduced_from"]} to {batch} to fit in memory')
  print(f'# first compile: jax state build {result["build_s"]:.1f} s + update compile '
        f'{result["jax_compile_s"]:.1f} s; torch.compile first step '
        f'{result.get("torch_compile_s", math.nan):.1f} s')
  if result.get('torch_compile_error'):
    print(f'# torch.compile failed: {result["torch_compile_error"]}')
  print(f'jax {result["jax_ms"]:.1f} ms/step ({1e3 * batch / result["jax_ms"]:.2f} pairs/s)  '
        f'torch eager {result["torch_ms"]:.1f} ms/step ({1e3 * batch / result["torch_ms"]:.2f} '
        f'pairs/s)  torch.compile {compiled_ms:.1f} ms/step  step {result["step_flops"] / 1e9:.1f} GFLOP  {gflops:.1f} GFLOP/s = '
        f'{gflops / peak:.1%} of the {peak:.1f} GFLOP/s matmul peak')
  cached_ms = result.get('jax_cached_ms', math.nan)
  print(f'jax with cached text features (what cost_jax.train runs when train.cache_text applies): '
        f'{cached_ms:.1f} ms/step  = {result["torch_ms"] / cached_ms:.2f}x eager, '
        f'{compiled_ms / cached_ms:.2f}x torch.compile (PyTorch runs its encoder every step)')
  print(common.format_key_values({
      'jax_cached_text_ms': cached_ms,
      'speedup_cached_vs_torch': result['torch_ms'] / cached_ms,
      'speedup_cached_vs_torch_compile': compiled_ms / cached_ms,
      'jax_pairs_per_s': 1e3 * batch / result['jax_ms'],
      'torch_pairs_per_s': 1e3 * batch / result['torch_ms'],
      'speedup_vs_torch': result['torch_ms'] / result['jax_ms'],
      'speedup_vs_torch_compile': compiled_ms / result['jax_ms'],
      'jax_ms': result['jax_ms'], 'torch_ms': result['torch_ms'], 'torch_compile_ms': compiled_ms,
      'jax_compile_s': result['jax_compile_s'], 'build_s': result['build_s'],
      'torch_compile_s': result.get('torch_compile_s', math.nan),
      'step_gflop': result['step_flops'] / 1e9, 'peak_fraction': gflops / peak,
      'peak_gflops': peak, 'torch_matmul_gflops': common.torch_matmul_peak_gflops(
          flags.FLAGS.peak_size, device=device), 'batch': batch, 'threads': threads,
      'precision': flags.FLAGS.precision or 'default', 'torch_device': device.type,
      **({'batch_reduced_from': result['batch_reduced_from']} if 'batch_reduced_from' in result
         else {})}))


if __name__ == '__main__':
  define_flags()
  flags.mark_flags_as_required(['config'])
  app.run(main)
