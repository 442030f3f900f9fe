r"""Where the training step's time goes: each stage of cost_jax's update jitted and timed alone.

  python -m bench.train_stages --config=configs/cost_tiny.py [--batch=16] [--iters=5]

Stages, on the same random batch as bench.train_step (train mode, the config's dtype):
  trunk        ResNet trunk + input_proj on the template and the search crop
  visual       TransT feature fusion + token conv (+ CoA's template-free token embeddings)
  text         the text encoder (BERT) + text_proj
  vl           the VL transformer
  heads        the dense (or [OBJ]) heads
  losses       cost_jax.train.compute_losses' loss terms from the model's outputs
each forward ('fwd') and forward + backward ('fwd+bwd': gradients of the stage's parameters and
float inputs for a summed output; the text encoder has none when train.freeze_text), then the whole
loss forward, its value_and_grad, and the whole update (cost_jax.train.make_train_step); 'optimizer'
is update minus value_and_grad. The stages' sum differs from the whole (XLA fuses across stages).
Prints one markdown row per stage: ms, GFLOP (XLA's cost analysis), GFLOP/s.
"""

import time

from absl import app
from absl import flags
from ml_collections import config_flags
import flax.linen as nn
import jax
import jax.numpy as jnp

from bench import common
from bench import train_step as bench_train_step
from cost_jax import losses
from cost_jax import sharding
from cost_jax import train
from cost_jax.models import coa as coa_lib
from cost_jax.models import cost


def define_flags():
  config_flags.DEFINE_config_file('config', None, 'Model and training config file.')
  flags.DEFINE_integer('batch', 0, 'Pairs per step; 0 = config.train.batch_size.')
  flags.DEFINE_integer('iters', 5, 'Timed calls per stage (median reported).')
  flags.DEFINE_integer('warmup', 1, 'Untimed calls per stage after compilation.')


def _timed(fn, args, iters, warmup):
  """(median ms, GFLOP) of jit(fn)(*args)."""
  compiled, flops = common.compile_with_flops(jax.jit(fn), *args)
  ms = common.median_ms(lambda: jax.block_until_ready(compiled(*args)), iters, warmup)
  return ms, flops / 1e9


def _sum_output(tree):
  return sum(jnp.sum(x.astype(jnp.float32)) for x in jax.tree.leaves(tree)
             if jnp.issubdtype(x.dtype, jnp.floating))


def stage_functions(model, variables, batch, config, token_centers):
  """{name: (fn(params_subtree, acts), params_subtree, acts, differentiable)}: each stage alone."""
  params, stats = variables['params'], variables['batch_stats']
  cfg = model.cfg
  rng = jax.random.key(0)

  def run(sub_names, method):
    """fn(sub, acts) applying `method(module, *acts)` with params[sub_names] replaced by `sub`."""
    def fn(sub, acts):
      merged = {**params, **sub}
      return model.apply({'params': merged, 'batch_stats': stats}, *acts, method=method,
                         rngs={'dropout': rng})
    return fn

  def trunk(m, template, search):
    return (m.encode_template(template)['template_map'],
            m.visual.project(m.backbone(m._normalise(search))))

  def visual(m, template_map, search_map):
    fused = m.visual(template_map, search_map, False)
    out = m.token_conv(fused)
    if m._object_coa():
      return out, m.coa.embed_tokens(coa_lib.search_tokens(search_map, cfg.token.grid))
    return out

  def text(m, ids, mask):
    features = m.text_encoder(ids, mask, deterministic=False)[0]
    return features, m.text_proj(features)

  def vl(m, text_tokens, mask, visual_tokens):
    return m.vl(text_tokens, mask, visual_tokens, False, False)[0]

  def heads(m, fused):
    return m.head(fused[:, 1 + cfg.text.max_len:] if cfg.head.type == 'dense' else fused[:, 0])

  sub = lambda *names: {n: params[n] for n in names if n in params}
  outputs, inter = model.apply(variables, batch['template'], batch['search'], batch['text_ids'],
                               batch['text_mask'], train=True, rngs={'dropout': rng})
  t_map, s_map = jax.jit(run(sub('backbone', 'visual'), trunk))(
      sub('backbone', 'visual'), (batch['template'], batch['search']))
  fused = jax.jit(run(sub('vl'), vl))(sub('vl'), (inter['text_tokens'], batch['text_mask'],
                                                  inter['visual_tokens']))
  coa_fn = losses.coa_loss

  def loss_terms(_, acts):
    out, inter_ = acts
    return train.loss_of_outputs(out, inter_, batch, config=config, token_centers=token_centers,
                                 coa_fn=coa_fn)[0]

  loss_inter = {k: inter[k] for k in ('coa_visual', 'coa_text', 'logit_scale', 'coa_tokens')
                if k in inter}
  text_trainable = not config.train.freeze_text
  return {
      'trunk': (run(sub('backbone', 'visual'), trunk), sub('backbone', 'visual'),
                (batch['template'], batch['search']), True),
      'visual': (run(sub('visual', 'token_conv', 'coa'), visual),
                 sub('visual', 'token_conv', 'coa'), (t_map, s_map), True),
      'text': (run(sub('text_encoder', 'text_proj'), text), sub('text_encoder', 'text_proj'),
               (batch['text_ids'], batch['text_mask']), text_trainable),
      'vl': (run(sub('vl'), vl), sub('vl'), (inter['text_tokens'], batch['text_mask'],
                                             inter['visual_tokens']), True),
      'heads': (run(sub('head'), heads), sub('head'), (fused,), True),
      'losses': (loss_terms, {}, (outputs, loss_inter), True),
  }


def measure_stages(config, batch_size, iters, warmup):
  """[(stage, pass, ms, GFLOP)] for the config's training step at `batch_size`."""
  model = cost.COST(config.model)
  mesh = train.create_mesh(config)
  state, shardings, tx = train.create_train_state(config, model, jax.random.key(config.seed), mesh)
  variables = {'params': state.params, 'batch_stats': state.batch_stats}
  batch = jax.tree.map(jnp.asarray, bench_train_step.random_batch(config, batch_size))
  token_centers = jnp.asarray(bench_train_step.normalised_token_centers(config.model))
  rows = []
  for name, (fn, sub, acts, differentiable) in stage_functions(
      model, variables, batch, config, token_centers).items():
    ms, gflop = _timed(fn, (sub, acts), iters, warmup)
    rows.append((name, 'fwd', ms, gflop))
    print(f'# {name} fwd {ms:.1f} ms', flush=True)
    if differentiable:
      def fwd_bwd(sub, acts, fn=fn):
        leaves, treedef = jax.tree.flatten(acts)
        is_float = [jnp.issubdtype(x.dtype, jnp.floating) for x in leaves]

        def f(sub, float_leaves):
          it = iter(float_leaves)
          merged = [next(it) if flt else x for x, flt in zip(leaves, is_float)]
          return _sum_output(fn(sub, jax.tree.unflatten(treedef, merged)))
        return jax.grad(f, argnums=(0, 1))(sub, [x for x, flt in zip(leaves, is_float) if flt])
      ms, gflop = _timed(fwd_bwd, (sub, acts), iters, warmup)
      rows.append((name, 'fwd+bwd', ms, gflop))
      print(f'# {name} fwd+bwd {ms:.1f} ms', flush=True)

  coa_fn = losses.coa_loss_sharded(mesh, tuple(config.mesh.axes))
  loss = lambda p, b: train.compute_losses(
      train.without_frozen_gradients(p, config.train), state.batch_stats, b, jax.random.key(0), model=model,
      config=config, token_centers=token_centers, coa_fn=coa_fn)[0]
  global_batch = jax.device_put(bench_train_step.random_batch(config, batch_size),
                                sharding.batch_sharding(mesh, config.mesh))
  for stage, kind, fn in (('whole loss', 'fwd', loss),
                          ('whole loss', 'fwd+bwd', jax.value_and_grad(loss))):
    ms, gflop = _timed(fn, (state.params, global_batch), iters, warmup)
    rows.append((stage, kind, ms, gflop))
    print(f'# {stage} {kind} {ms:.1f} ms', flush=True)
  step = train.make_train_step(config, model, tx, mesh, shardings)
  compiled, flops = common.compile_with_flops(step, state, global_batch)
  holder = [state]

  def update():
    holder[0], metrics = compiled(holder[0], global_batch)
    jax.block_until_ready(metrics)
  ms = common.median_ms(update, iters, warmup)
  rows.append(('whole update', 'fwd+bwd+opt', ms, flops / 1e9))
  value_and_grad_ms = rows[-2][2]
  rows.append(('optimizer', 'update - value_and_grad', ms - value_and_grad_ms, float('nan')))
  return rows


def main(argv):
  del argv
  config = flags.FLAGS.config
  batch = flags.FLAGS.batch or config.train.batch_size
  config.train.batch_size = batch
  start = time.perf_counter()
  rows = measure_stages(config, batch, flags.FLAGS.iters, flags.FLAGS.warmup)
  print(f'# bench.train_stages  config={flags.FLAGS["config"].config_filename}  batch {batch}  '
        f'dtype {config.model.dtype}  ({time.perf_counter() - start:.0f} s)')
  print(f'# machine: {common.machine_description()}')
  print('| stage | pass | ms | GFLOP | GFLOP/s |')
  print('|---|---|---|---|---|')
  for stage, kind, ms, gflop in rows:
    print(f'| {stage} | {kind} | {ms:.1f} | {gflop:.2f} | {gflop / ms * 1e3:.1f} |')


if __name__ == '__main__':
  define_flags()
  flags.mark_flags_as_required(['config'])
  app.run(main)
