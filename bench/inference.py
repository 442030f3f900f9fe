r"""Per-frame tracking step, JAX (jitted) vs PyTorch (eager, and torch.compile), same weights and inputs.

  python -m bench.inference --config=configs/cost_r50.py            # CPU: several minutes
  python -m bench.inference --config=configs/cost_tiny.py            # CPU: a few minutes
  python -m bench.inference --config=configs/cost_tiny.py --iters=2 --warmup=1 --batch=1,2 \
      --notorch_compile --peak_size=256                             # smoke run (tests/test_bench.py)

What is timed: `COST.track_step` — search-crop trunk + input_proj, TransT feature fusion against the
cached template map, token conv, VL transformer with the cached text tokens, dense heads — on a uint8
search crop already in memory (no cropping, no decoding), template and text caches computed once
beforehand, float32, eval mode. JAX: one jitted call, block_until_ready. PyTorch: torch.inference_mode,
the same thread count. Latency = median over ceil(--iters / batch) calls (at least --iters frames)
after ceil(--warmup / batch) calls. torch.compile and the per-stage split run for the first batch
size only (they cost minutes of CPU each).

On a GPU (`--torch_device=auto` picks CUDA when PyTorch sees one) the PyTorch calls are followed by
torch.cuda.synchronize inside the timed region; `--precision=tf32|float32` sets both frameworks'
float32 matmul/convolution mode alike (unset: each framework's default).

Beside it: the step's FLOPs and the full forward's (XLA cost analysis of the compiled programs), the
achieved GFLOP/s, and the float32 matmul peak this machine reaches (jnp.dot of two square matrices), so
peak_fraction = achieved / peak. With --stages, each stage of the step is also timed on its own.
The last line is `key=value` figures for batch 1 (and `_b<N>` suffixed ones for the other batches).
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

from bench import common
from bench import torch_reference
from cost_jax import pretrained
from cost_jax.models import cost


def define_flags():
  """The command-line flags (defined only when run as a program)."""
  config_flags.DEFINE_config_file('config', None, 'Model config file.')
  flags.DEFINE_integer('iters', 50, 'Timed frames per measurement: ceil(iters / batch) calls, '
                'median reported.')
  flags.DEFINE_integer('warmup', 5, 'Untimed calls before timing (after compilation).')
  flags.DEFINE_list('batch', ['1', '8'], 'Batch sizes (sequences tracked in lock-step).')
  flags.DEFINE_boolean('torch_compile', True, 'Also time torch.compile(track_step) (first batch).')
  flags.DEFINE_boolean('stages', True, 'Also time each stage of the step alone (first batch).')
  flags.DEFINE_boolean('full_flops', True, 'Also compile the full forward for its FLOPs '
                       '(step_flops_fraction).')
  common.define_framework_flags()


def random_inputs(cfg, batch, seed=0):
  """(template uint8, search uint8, text_ids int32, text_mask int32) numpy, mask with padding."""
  rng = np.random.default_rng(seed)
  template = rng.integers(0, 256, (batch, cfg.template_size, cfg.template_size, 3), np.uint8)
  search = rng.integers(0, 256, (batch, cfg.search_size, cfg.search_size, 3), np.uint8)
  ids = rng.integers(1, cfg.text.vocab_size, (batch, cfg.text.max_len)).astype(np.int32)
  mask = np.ones_like(ids)
  mask[:, 12:] = 0
  return template, search, ids * mask, mask


def build_models(model_cfg, seed=0, device='cpu'):
  """Flax COST + its variables, and the PyTorch reference (eval mode, on `device`) holding the same
  weights."""
  model = cost.COST(model_cfg)
  variables = pretrained.init_variables(model, jax.random.key(seed))
  reference = torch_reference.load_from_flax(torch_reference.COST(model_cfg).eval(), variables)
  return model, variables, reference.to(device)


def jax_step(model):
  """jit(variables, template_cache, text_cache, search) -> outputs."""
  return jax.jit(lambda v, tc, xc, s: model.apply(v, tc, xc, s, method=cost.COST.track_step))


def jax_full_forward(model):
  """jit(variables, template, search, ids, mask) -> (outputs, inter), eval mode."""
  return jax.jit(lambda v, *inputs: model.apply(v, *inputs, train=False))


def jax_stage_fns(model):
  """{stage: (jitted fn(variables, *args), args builder)} for the stages of track_step."""
  def trunk(m, search):
    return m.visual.project(m.backbone(m._normalise(search)))

  def fusion(m, template_map, search_map):
    return m.visual(template_map, search_map, True)

  def token_conv(m, fused):
    return m.token_conv(fused)

  def vl_heads(m, visual, text_tokens, text_mask):
    return m._fuse_and_predict(visual, text_tokens, text_mask, True, False)[0]

  return {name: jax.jit(lambda v, *a, fn=fn: model.apply(v, *a, method=fn))
          for name, fn in (('trunk', trunk), ('fusion', fusion), ('token_conv', token_conv),
                           ('vl_heads', vl_heads))}


def time_jax_stages(model, variables, template_cache, text_cache, search, iters, warmup):
  """Each stage of the JAX step fed with the previous stage's real output: ({stage: median ms},
  {stage: FLOPs from the lowered program's cost analysis})."""
  fns = jax_stage_fns(model)
  args = {'trunk': (search,)}
  args['fusion'] = (template_cache['template_map'], fns['trunk'](variables, search))
  args['token_conv'] = (fns['fusion'](variables, *args['fusion']),)
  args['vl_heads'] = (fns['token_conv'](variables, *args['token_conv']),
                      text_cache['text_tokens'], text_cache['text_mask'])
  compiled = {name: common.compile_with_flops(fn, variables, *args[name])
              for name, fn in fns.items()}
  times = {name: common.median_ms(
      lambda fn=fn, a=args[name]: jax.block_until_ready(fn(variables, *a)), iters, warmup)
           for name, (fn, _) in compiled.items()}
  return times, {name: flops for name, (_, flops) in compiled.items()}


def time_torch_stages(reference, template_cache, text_cache, search, iters, warmup):
  """Median ms of each stage of the PyTorch step (eager), same split as time_jax_stages."""
  device = search.device
  tokens, pos, (height, width) = reference._features(search)
  fused = reference.featurefusion_network(template_cache['tokens'], tokens, template_cache['pos'], pos)
  fused_map = fused.transpose(1, 2).reshape(fused.shape[0], -1, height, width)
  visual = reference.token_conv(fused_map)
  calls = {
      'trunk': lambda: reference._features(search),
      'fusion': lambda: reference.featurefusion_network(template_cache['tokens'], tokens,
                                                        template_cache['pos'], pos),
      'token_conv': lambda: reference.token_conv(fused_map),
      'vl_heads': lambda: reference.fuse(visual, text_cache),
  }
  return {name: common.median_ms(common.torch_synced(call, device), iters, warmup)
          for name, call in calls.items()}


def torch_compiled_ms(reference, template_cache, text_cache, search, iters, warmup):
  """Median ms of torch.compile(track_step) (default inductor backend), or (nan, reason)."""
  try:
    compiled = torch.compile(reference.track_step)
    call = common.torch_synced(lambda: compiled(template_cache, text_cache, search), search.device)
    call()
    return common.median_ms(call, iters, warmup), ''
  except Exception as e:  # a missing compiler or an unsupported op: report it, keep the rest
    return math.nan, f'{type(e).__name__}: {str(e).splitlines()[0][:200]}'


def measure_batch(model, variables, reference, batch, iters, warmup, with_compile, with_stages,
                  with_full_flops=True):
  """All figures for one batch size: {'jax_ms', 'torch_ms', ..., 'step_flops', 'full_flops'}.

  Each figure is printed as soon as it is measured, so a run stopped by a time limit keeps them.
  """
  cfg = model.cfg
  iters = -(-iters // batch)  # every measurement covers at least `iters` frames
  warmup = -(-warmup // batch)
  template, search, ids, mask = random_inputs(cfg, batch)
  template_cache = model.apply(variables, template, method=cost.COST.encode_template)
  text_cache = model.apply(variables, ids, mask, method=cost.COST.encode_text)
  search_device = jnp.asarray(search)
  start = time.perf_counter()
  step, step_flops = common.compile_with_flops(jax_step(model), variables, template_cache,
                                               text_cache, search_device)
  result = {'step_flops': step_flops, 'jax_compile_s': time.perf_counter() - start}
  if with_full_flops:
    result['full_flops'] = common.compiled_flops(jax_full_forward(model), variables, template,
                                                 search_device, ids, mask)
  result['jax_ms'] = common.median_ms(
      lambda: jax.block_until_ready(step(variables, template_cache, text_cache, search_device)),
      iters, warmup)
  print(f'# batch {batch}: jax {result["jax_ms"]:.3f} ms (compiled in {result["jax_compile_s"]:.1f} s, '
        f'{step_flops / 1e9:.2f} GFLOP)', flush=True)
  device = next(reference.parameters()).device
  with torch.inference_mode():
    t_template, t_search = torch.from_numpy(template).to(device), torch.from_numpy(search).to(device)
    t_ids = torch.from_numpy(ids).long().to(device)
    t_mask = torch.from_numpy(mask).long().to(device)
    t_template_cache = reference.encode_template(t_template)
    t_text_cache = reference.encode_text(t_ids, t_mask)
    result['torch_ms'] = common.median_ms(common.torch_synced(
        lambda: reference.track_step(t_template_cache, t_text_cache, t_search), device),
        iters, warmup)
    print(f'# batch {batch}: torch eager {result["torch_ms"]:.3f} ms', flush=True)
    if with_stages:
      result['jax_stages'], result['stage_flops'] = time_jax_stages(
          model, variables, template_cache, text_cache, search_device, iters, warmup)
      result['torch_stages'] = time_torch_stages(reference, t_template_cache, t_text_cache, t_search,
                                                 iters, warmup)
  if with_compile:
    with torch.no_grad():
      result['torch_compile_ms'], result['torch_compile_error'] = torch_compiled_ms(
          reference, t_template_cache, t_text_cache, t_search, iters, warmup)
    print(f'# batch {batch}: torch.compile {result["torch_compile_ms"]:.3f} ms '
          f'{result["torch_compile_error"]}', flush=True)
  return result


def summary_values(results, peak_gflops, threads):
  """The key=value figures: batch 1 (or the first batch) unsuffixed, others with `_b<N>`."""
  values = {}
  for index, (batch, r) in enumerate(results.items()):
    suffix = '' if index == 0 else f'_b{batch}'
    gflops = r['step_flops'] / (r['jax_ms'] * 1e-3) / 1e9
    values['jax_ms' + suffix] = r['jax_ms']
    values['torch_ms' + suffix] = r['torch_ms']
    values['speedup_vs_torch' + suffix] = r['torch_ms'] / r['jax_ms']
    if 'torch_compile_ms' in r:
      values['torch_compile_ms' + suffix] = r['torch_compile_ms']
    values['jax_fps' + suffix] = 1e3 * batch / r['jax_ms']
    values['gflops_achieved' + suffix] = gflops
    values['peak_fraction' + suffix] = gflops / peak_gflops
    if index == 0:
      values['step_gflop'] = r['step_flops'] / 1e9 / batch
      if 'full_flops' in r:
        values['full_gflop'] = r['full_flops'] / 1e9 / batch
        values['step_flops_fraction'] = r['step_flops'] / r['full_flops']
  values['peak_gflops'] = peak_gflops
  values['threads'] = threads
  values['batch'] = ','.join(str(b) for b in results)
  return values


def print_report(config_name, results, peak_gflops, threads, precision, device):
  print(f'# bench.inference  config={config_name}  float32 (matmul mode: '
        f'{precision or "framework defaults"})  eval mode  torch on {device}')
  print(f'# machine: {common.machine_description()}')
  print(f'# threads: PyTorch {threads} (torch.set_num_threads), XLA CPU default pool '
        f'({os.cpu_count()} cores)')
  print('# timed: COST.track_step on an in-memory uint8 search crop; template + text cached; '
        'median over ceil(iters / batch) calls after warm-up')
  print(f'# float32 matmul peak (jnp.dot, measured): {peak_gflops:.1f} GFLOP/s')
  for batch, r in results.items():
    gflops = r['step_flops'] / (r['jax_ms'] * 1e-3) / 1e9
    print(f'batch {batch}: jax {r["jax_ms"]:.2f} ms  torch eager {r["torch_ms"]:.2f} ms  '
          f'torch.compile {r.get("torch_compile_ms", math.nan):.2f} ms  '
          f'speedup {r["torch_ms"] / r["jax_ms"]:.2f}x  '
          f'step {r["step_flops"] / 1e9:.2f} GFLOP (full forward {r.get("full_flops", math.nan) / 1e9:.2f})  '
          f'{gflops:.1f} GFLOP/s = {gflops / peak_gflops:.1%} of peak')
    if r.get('torch_compile_error'):
      print(f'  torch.compile failed: {r["torch_compile_error"]}')
    for name in r.get('jax_stages', {}):
      ms, flops = r['jax_stages'][name], r['stage_flops'][name]
      print(f'  stage {name:>10}: jax {ms:8.2f} ms   torch {r["torch_stages"][name]:8.2f} ms   '
            f'{flops / 1e9:6.2f} GFLOP   jax {flops / ms / 1e6:6.1f} GFLOP/s '
            f'({flops / ms / 1e6 / peak_gflops:.0%} of peak)')


def main(argv):
  del argv
  config = flags.FLAGS.config
  threads, device = common.setup_frameworks(flags.FLAGS)
  start = time.perf_counter()
  model, variables, reference = build_models(config.model, config.seed, device)
  print(f'# models built in {time.perf_counter() - start:.1f} s', flush=True)
  results = {}
  for index, batch in enumerate(int(b) for b in flags.FLAGS.batch):
    first = index == 0  # torch.compile and the stage split: first batch size only (CPU time)
    results[batch] = measure_batch(model, variables, reference, batch, flags.FLAGS.iters,
                                   flags.FLAGS.warmup, flags.FLAGS.torch_compile and first,
                                   flags.FLAGS.stages and first, flags.FLAGS.full_flops)
  peak = common.matmul_peak_gflops(flags.FLAGS.peak_size)
  torch_peak = common.torch_matmul_peak_gflops(flags.FLAGS.peak_size, device=device)
  print_report(flags.FLAGS['config'].config_filename, results, peak, threads,
               flags.FLAGS.precision, device)
  print(f'# float32 matmul with torch.matmul ({device}) for comparison: {torch_peak:.1f} GFLOP/s')
  values = summary_values(results, peak, threads)
  values['torch_matmul_gflops'] = torch_peak
  values['precision'] = flags.FLAGS.precision or 'default'
  values['torch_device'] = device.type
  print(common.format_key_values(values))


if __name__ == '__main__':
  define_flags()
  flags.mark_flags_as_required(['config'])
  app.run(main)
