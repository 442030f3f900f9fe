"""Training COST (DESIGN §3): one jitted, sharded update step on a ('data', 'fsdp') mesh.

  python -m cost_jax.train --config=configs/cost_tiny.py --workdir=runs/tiny \
      --config.data.roots.synthetic=data/synth [--config.train.num_steps=600]

Sections, top to bottom: train state, logging, mesh, input, model and optimiser, shardings, update
step, checkpoint, loop, main. Restarting with the same workdir resumes from the latest checkpoint
and continues bit-identically on CPU/TPU (index-based data, dropout keys fold_in(seed, step)).
Multi-process runs: see launch/README.md (--coordinator_address/--num_processes/--process_id, SLURM
and TPU pods are detected).
"""

import json
import os
import time

from absl import logging
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from cost_jax import checkpoints
from cost_jax import losses
from cost_jax import optim
from cost_jax import sharding
from cost_jax.models import cost


# ------------------------------------------------------------------ train state

@flax.struct.dataclass
class TrainState:
  """Everything a checkpoint holds; nonfinite_step = first step with NaN/Inf loss/grads, else -1."""
  step: jax.Array
  params: dict
  batch_stats: dict
  opt_state: optax.OptState
  nonfinite_step: jax.Array


# ------------------------------------------------------------------ logging

class MetricsLogger:
  """TensorBoard events + <workdir>/metrics.jsonl + one console line per log step (process 0)."""

  def __init__(self, workdir, num_steps):
    self.num_steps = num_steps
    self.enabled = jax.process_index() == 0
    self._last = None
    if self.enabled:
      import tensorflow as tf
      tf.config.set_visible_devices([], 'GPU')
      tf.io.gfile.makedirs(workdir)  # local paths and bucket URLs alike
      self._tf = tf
      self._writer = tf.summary.create_file_writer(os.path.join(workdir, 'tensorboard'))
      from tensorflow.core.framework import summary_pb2
      self._scalar_metadata = summary_pb2.SummaryMetadata(
          plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name='scalars'))
      self._jsonl = tf.io.gfile.GFile(os.path.join(workdir, 'metrics.jsonl'), 'a')

  def write(self, step, metrics, replacements):
    """step: completed steps; metrics: host scalars; replacements: {reason: count} of the stream."""
    now = time.perf_counter()
    if self._last is not None and step > self._last[0]:
      metrics['steps_per_s'] = (step - self._last[0]) / (now - self._last[1])
    self._last = (step, now)
    if not self.enabled:
      return
    record = {'step': step, **{k: float(v) for k, v in metrics.items()},
              **{f'replaced/{k}': int(v) for k, v in replacements.items()}}
    self._jsonl.write(json.dumps(record) + '\n')
    self._jsonl.flush()
    with self._writer.as_default(step=step):
      for k, v in record.items():
        if k != 'step':  # what tf.summary.scalar writes, without needing the tensorboard package
          self._tf.summary.write(k, self._tf.constant(v, self._tf.float32),
                                 metadata=self._scalar_metadata)
    self._writer.flush()
    rate = metrics.get('steps_per_s')
    eta = f'{(self.num_steps - step) / rate / 60:.1f} min' if rate else '?'
    logging.info('step %d/%d  loss %.4f (cls %.4f l1 %.4f giou %.4f coa %.4f)  lr %.2e  '
                 '%s steps/s  ETA %s  replaced %d', step, self.num_steps, metrics['loss'],
                 metrics['cls'], metrics['l1'], metrics['giou'], metrics['coa'], metrics['lr'],
                 f'{rate:.2f}' if rate else '?', eta, sum(replacements.values()))

  def close(self):
    if self.enabled:
      self._jsonl.close()
      self._writer.close()


# ------------------------------------------------------------------ mesh and input

def create_mesh(config):
  return sharding.make_mesh(config.mesh)


def create_input(config, mesh):
  """(PairStream for this host, fn host batch -> global jax.Array batch)."""
  from input_pipeline import readers
  from input_pipeline import stream
  sequences = {name: readers.load_dataset(name, readers.dataset_root(config, name),
                                          split=config.data.splits.get(name))
               for name in config.data.weights}
  pairs = stream.PairStream(config, sequences, host_id=jax.process_index(),
                            num_hosts=jax.process_count())
  spec = sharding.batch_spec(config.mesh)
  return pairs, lambda batch: stream.to_global(batch, mesh, spec)


# ------------------------------------------------------------------ model and optimiser

def initial_weights(config):
  """Flat {'params/...': array} to merge over a fresh init: the pretrained text encoder
  (model.text.pretrained_dir), then a cost_jax.convert output (train.init_weights), which wins."""
  flat = {}
  if config.model.text.pretrained_dir:
    from cost_jax.convert.bert import convert_bert
    flat.update(convert_bert(config.model.text.pretrained_dir, config.model.text)[0])
  if config.train.init_weights:
    from cost_jax.convert import core
    flat.update(core.load_flat(os.path.join(config.train.init_weights, 'weights.safetensors')))
  return flat


def create_train_state(config, model, rng, mesh):
  """(state, state shardings, optimiser): shapes by eval_shape, then jit(init, out_shardings)."""
  init_variables = cost.init_fn(model)
  tx = optim.make_optimizer(config.train, jax.eval_shape(init_variables, rng)['params'])

  def init(rng):
    variables = init_variables(rng)
    return TrainState(step=jnp.zeros((), jnp.int32), params=variables['params'],
                      batch_stats=variables.get('batch_stats', {}),
                      opt_state=tx.init(variables['params']),
                      nonfinite_step=jnp.full((), -1, jnp.int32))

  abstract = jax.eval_shape(init, rng)
  shardings = sharding.tree_shardings(abstract, config.mesh, mesh)
  state = jax.jit(init, out_shardings=shardings)(rng)
  flat = initial_weights(config)
  if flat:  # Adam's moments start at zero whatever the parameters, so merging after init is exact.
    from cost_jax.convert import core
    merged = core.merge_into({'params': state.params, 'batch_stats': state.batch_stats}, flat)
    state = state.replace(
        params=jax.device_put(merged['params'], shardings.params),
        batch_stats=jax.device_put(merged['batch_stats'], shardings.batch_stats))
  return state, shardings, tx


# ------------------------------------------------------------------ update step

def compute_losses(params, batch_stats, batch, dropout_rng, *, model, config, token_centers,
                   coa_fn):
  """-> (total loss, {'cls', 'l1', 'giou', 'coa', 'loss'}) over the global batch."""
  with nn.logical_axis_rules(tuple(config.mesh.logical_axis_rules)):
    outputs, inter = model.apply({'params': params, 'batch_stats': batch_stats}, batch['template'],
                                 batch['search'], batch['text_ids'], batch['text_mask'],
                                 train=True, rngs={'dropout': dropout_rng},
                                 **({'text_features': batch['text_features']}
                                    if 'text_features' in batch else {}))
  parts = losses.detection_losses(outputs, batch['search_box'], token_centers,
                                  config.train.neg_weight)
  coa_visual = inter['coa_visual']
  if 'coa_tokens' in inter:  # coa.mode 'object': the target's tokens, and the sentence's map
    from cost_jax.models import coa as coa_lib
    positives = losses.positive_tokens(token_centers, batch['search_box'])
    coa_visual = losses.pool_target_tokens(inter['coa_tokens'], positives)
    parts['ground'] = losses.grounding_loss(inter['coa_tokens'], inter['coa_text'],
                                            inter['logit_scale'], positives,
                                            coa_lib.has_sentence(batch['text_mask']))
  parts['coa'] = coa_fn(coa_visual, inter['coa_text'], inter['logit_scale'],
                        batch['text_key'], batch['sequence_key'])
  total = losses.total_loss(parts, config.train)
  return total, {**parts, 'loss': total}


def _all_finite(*trees):
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(trees)]))


def frozen_text(params, train_cfg):
  """With train.freeze_text, the text encoder's parameters enter the loss as constants: XLA then
  skips the encoder's backward pass (its gradient is zero anyway; the optimiser also masks it)."""
  if not train_cfg.freeze_text or 'text_encoder' not in params:
    return params
  return {**params, 'text_encoder': jax.lax.stop_gradient(params['text_encoder'])}


def language_inputs(batch, rng, train_cfg, blank_template, empty_text):
  """The batch as the step trains on it: templates dropped, sentences emptied (config.train).

  template_drop: each example's template is replaced by the blank template
  (input_pipeline.crops.blank_template) with this probability, so the sentence alone must find the
  target in the search crop (and a sentence-only start has a model to run). template_grey: each
  (kept) template is turned grey (ITU-R 601 luma) with this probability, the search crop not, so the
  sentence's colour words are what tell a target from a same-shaped object of another colour.
  empty_sentences: every sentence is replaced by the empty one ([CLS] [SEP]): the
  trained-without-language ablation. blank_template: uint8 [Ht, Ht, 3]; empty_text: (ids, mask)
  int32 [L]. rng: a key for this step.
  """
  batch = dict(batch)
  drop_rng, grey_rng = jax.random.split(rng)
  if train_cfg.template_grey > 0:
    template = batch['template']
    luma = jnp.round(template.astype(jnp.float32) @ jnp.array([0.299, 0.587, 0.114], jnp.float32))
    grey = jnp.broadcast_to(jnp.clip(luma, 0, 255)[..., None], template.shape).astype(template.dtype)
    turn = jax.random.bernoulli(grey_rng, train_cfg.template_grey, template.shape[:1])
    batch['template'] = jnp.where(turn[:, None, None, None], grey, template)
  if train_cfg.template_drop > 0:
    drop = jax.random.bernoulli(drop_rng, train_cfg.template_drop, batch['template'].shape[:1])
    batch['template'] = jnp.where(drop[:, None, None, None], jnp.asarray(blank_template),
                                  batch['template'])
  if train_cfg.empty_sentences:
    for key, value in zip(('text_ids', 'text_mask'), empty_text):
      batch[key] = jnp.broadcast_to(jnp.asarray(value), batch[key].shape)
    batch['text_key'] = jnp.zeros_like(batch['text_key'])  # one sentence: all CoA positives
  return batch


def train_step(state, batch, *, model, tx, config, token_centers, coa_fn, blank_template=None,
               empty_text=None):
  """One update on a global batch -> (new state, metrics). Dropout key = fold_in(seed, step);
  template dropout's key = fold_in of that key (see language_inputs)."""
  dropout_rng = jax.random.fold_in(jax.random.PRNGKey(config.seed), state.step)
  batch = language_inputs(batch, jax.random.fold_in(dropout_rng, 1), config.train, blank_template,
                          empty_text)
  loss_fn = lambda p: compute_losses(frozen_text(p, config.train), state.batch_stats, batch,
                                     dropout_rng, model=model, config=config,
                                     token_centers=token_centers, coa_fn=coa_fn)
  (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  if config.train.force_nan_at_step >= 0:  # testing the NaN guard
    nan = jnp.where(state.step == config.train.force_nan_at_step, jnp.nan, 0.0)
    grads = jax.tree.map(lambda g: g + nan, grads)
    metrics['loss'] = loss + nan
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  finite = _all_finite(metrics['loss'], grads)
  nonfinite_step = jnp.where((state.nonfinite_step < 0) & ~finite, state.step,
                             state.nonfinite_step)
  metrics.update(lr=optim.learning_rate_fn(config.train)(state.step),
                 grad_norm=optax.global_norm(grads), param_norm=optax.global_norm(params),
                 update_norm=optax.global_norm(updates), all_finite=finite.astype(jnp.float32))
  new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                            nonfinite_step=nonfinite_step)
  return new_state, metrics


def make_train_step(config, model, tx, mesh, state_shardings):
  """train_step jitted on `mesh`, state donated: (state, global batch) -> (state, metrics)."""
  from input_pipeline import crops
  from input_pipeline import tokenize
  m = config.model
  centers = np.asarray(crops.token_centers(m), np.float32) / m.search_size
  blank = crops.blank_template(m.template_size, m.image_mean)
  empty = tokenize.tokenizer_for(m).encode('') if config.train.empty_sentences else None
  step = lambda state, batch: train_step(
      state, batch, model=model, tx=tx, config=config, token_centers=jnp.asarray(centers),
      coa_fn=losses.coa_loss_sharded(mesh, tuple(config.mesh.axes)), blank_template=blank,
      empty_text=empty)
  return jax.jit(step, in_shardings=(state_shardings, sharding.batch_sharding(mesh, config.mesh)),
                 out_shardings=(state_shardings, sharding.replicated(mesh)), donate_argnums=0)


# ------------------------------------------------------------------ checkpoint and loop

def _time_is_up(t, started, step):
  """config.train.max_minutes reached; several processes follow process 0's clock (log steps)."""
  if t.max_minutes <= 0:
    return False
  up = time.perf_counter() - started > 60 * t.max_minutes
  if jax.process_count() == 1:
    return up
  if step % t.log_every:
    return False
  from jax.experimental import multihost_utils
  return bool(multihost_utils.broadcast_one_to_all(np.asarray(up)))


def _progress(t, start):
  """A tqdm bar over the remaining steps on process 0 when config.train.progress_bar, else None."""
  if not t.progress_bar or jax.process_index() != 0:
    return None
  import tqdm
  return tqdm.tqdm(total=t.num_steps, initial=start, unit='step', dynamic_ncols=True)


def _text_feature_cache(config, model):
  """cost_jax.text_cache's cache when it applies (frozen, dropout-free text encoder; one process:
  the cache encodes host-local sentences with the state's parameters), else None."""
  from cost_jax import text_cache
  if not text_cache.enabled(config) or jax.process_count() > 1:
    return None
  logging.info('Frozen text encoder: features cached per sentence (train.cache_text)')
  return text_cache.TextFeatureCache(config, model)


def _save(ckpt, step, state):
  if step not in ckpt.manager.all_steps():
    ckpt.save(step, state, {'next_step': step}, int(jax.device_get(state.nonfinite_step)))


def train_and_evaluate(config, workdir, model=None):
  """Trains config.train.num_steps steps in `workdir`, resuming from its latest checkpoint.

  model: a linen module with COST's apply contract (default cost.COST(config.model)).

  Returns the final TrainState. Stops early (after saving) on SIGTERM / preemption or when
  config.train.max_minutes is reached; raises
  checkpoints.NonFiniteError naming the step when the loss or gradients become NaN/Inf.
  """
  t = config.train
  mesh = create_mesh(config)
  logging.info('mesh %s over %d devices (%d processes)', dict(mesh.shape), jax.device_count(),
               jax.process_count())
  pairs, to_global = create_input(config, mesh)

  model = cost.COST(config.model) if model is None else model
  state, shardings, tx = create_train_state(config, model, jax.random.PRNGKey(config.seed), mesh)
  step_fn = make_train_step(config, model, tx, mesh, shardings)
  features = _text_feature_cache(config, model)

  ckpt = checkpoints.Checkpointer(workdir, keep=t.keep_checkpoints)
  start = 0
  if ckpt.latest_step() is not None:
    abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                            state, shardings)
    state, metadata = ckpt.restore(abstract)
    start = int(metadata['next_step'])
    logging.info('Resumed from %s at step %d', checkpoints.checkpoint_dir(workdir), start)

  logger = MetricsLogger(workdir, t.num_steps)
  flag = checkpoints.SigtermFlag() if jax.process_count() == 1 else None
  batches = pairs.iterate(start)
  bar = _progress(t, start)
  started = time.perf_counter()
  try:
    for step in range(start, t.num_steps):
      if checkpoints.should_stop_for_preemption(ckpt, flag, step):
        logging.warning('Preempted: saving step %d and exiting.', step)
        _save(ckpt, step, state)
        break
      if step > start and _time_is_up(t, started, step):
        logging.warning('config.train.max_minutes=%g reached: saving step %d.', t.max_minutes, step)
        _save(ckpt, step, state)
        break
      batch = next(batches)
      if features is not None:
        batch = features.add_features(batch, state.params)
      state, metrics = step_fn(state, to_global(batch))
      done = step + 1
      if bar is not None:
        bar.update(1)
      if done % t.log_every == 0 or done == t.num_steps:
        metrics = jax.device_get(metrics)
        checkpoints.check_finite(jax.device_get(state.nonfinite_step))
        logger.write(done, metrics, pairs.replacements())
        if bar is not None:
          bar.set_postfix(loss=f"{metrics['loss']:.3f}")
      if done % t.checkpoint_every == 0 or done == t.num_steps:
        _save(ckpt, done, state)
  finally:
    if bar is not None:
      bar.close()
    ckpt.close()
    logger.close()
    if flag is not None:
      flag.restore_handler()
  return state


# ------------------------------------------------------------------ main

def main(argv):
  del argv
  from absl import flags
  from cost_jax import distributed
  f = flags.FLAGS
  distributed.initialize(f.coordinator_address or None, f.num_processes, f.process_id)
  from cost_jax import compilation_cache
  compilation_cache.enable()
  train_and_evaluate(f.config, f.workdir)


if __name__ == '__main__':
  from absl import app
  from absl import flags
  from ml_collections import config_flags
  config_flags.DEFINE_config_file('config', None, 'Training config file.', lock_config=True)
  flags.DEFINE_string('workdir', None, 'Checkpoints, TensorBoard events and metrics.jsonl go here.')
  flags.DEFINE_string('coordinator_address', '', 'host:port of process 0 (explicit multi-process).')
  flags.DEFINE_integer('num_processes', None, 'Number of processes (explicit multi-process).')
  flags.DEFINE_integer('process_id', None, 'This process (explicit multi-process).')
  flags.mark_flags_as_required(['config', 'workdir'])
  app.run(main)
