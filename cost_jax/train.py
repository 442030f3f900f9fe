"""Training COST (docs/design.md §3): one jitted, sharded update step on a ('data', 'fsdp') mesh.

  python -m cost_jax.train --config=configs/cost_tiny.py --workdir=runs/tiny \
      --config.data.roots.synthetic=data/synth [--config.train.num_steps=600]

Sections, top to bottom: train state, logging, mesh, input, model and optimiser, shardings, update
step, checkpoint, loop, main. Restarting with the same workdir resumes from the latest checkpoint
and continues bit-identically on CPU/TPU (index-based data, dropout keys fold_in(seed, step)).
Multi-process runs: see launch/README.md (--coordinator_address/--num_processes/--process_id, SLURM
and TPU pods are detected).
"""

import contextlib
import json
import os
import sys
import time

from absl import logging
import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from configs import common
from cost_jax import checkpoints
from cost_jax import losses
from cost_jax import optim
from cost_jax import pretrained
from cost_jax import sharding
from cost_jax import workdir as workdir_lib
from cost_jax.convert import core
from cost_jax.models import coa
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
  truncated = pairs.truncated_sentences()
  if truncated:
    name, tokens = max(truncated.items(), key=lambda item: item[1])
    logging.info('%d sentence(s) longer than text.max_len=%d tokens train truncated (longest: %s, '
                 '%d tokens)', len(truncated), pairs.text_len, name, tokens)
  spec = sharding.batch_spec(config.mesh)
  return pairs, lambda batch: stream.to_global(batch, mesh, spec)


# ------------------------------------------------------------------ model and optimiser

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
  flat = pretrained.initial_weights(config.model, config.train.init_weights)
  if flat:  # Adam's moments start at zero whatever the parameters, so merging after init is exact.
    merged = core.merge_into({'params': state.params, 'batch_stats': state.batch_stats}, flat)
    state = state.replace(
        params=jax.device_put(merged['params'], shardings.params),
        batch_stats=jax.device_put(merged['batch_stats'], shardings.batch_stats))
  return state, shardings, tx


# ------------------------------------------------------------------ update step

def compute_losses(params, batch_stats, batch, dropout_rng, *, model, config, token_centers,
                   coa_fn):
  """-> (total loss, {'cls', 'l1', 'giou', 'coa', 'loss'}) over the global batch."""
  outputs, inter = model.apply({'params': params, 'batch_stats': batch_stats}, batch['template'],
                               batch['search'], batch['text_ids'], batch['text_mask'],
                               train=True, rngs={'dropout': dropout_rng},
                               **({'text_features': batch['text_features']}
                                  if 'text_features' in batch else {}))
  total, parts = loss_of_outputs(outputs, inter, batch, config=config,
                                 token_centers=token_centers, coa_fn=coa_fn)
  return total, {**parts, 'loss': total}


def loss_of_outputs(outputs, inter, batch, *, config, token_centers, coa_fn):
  """The model's (outputs, inter) on `batch` -> (total loss, {'cls', 'loc', 'l1', 'giou', 'coa'[,
  'ground']}): the detection losses, CoA and, in coa.mode 'object', the grounding loss."""
  parts = losses.detection_losses(outputs, batch['search_box'], token_centers,
                                  config.train.neg_weight)
  coa_visual = inter['coa_visual']
  if 'coa_tokens' in inter:  # coa.mode 'object': the target's tokens, and the sentence's map
    positives = losses.positive_tokens(token_centers, batch['search_box'])
    coa_visual = losses.pool_target_tokens(inter['coa_tokens'], positives)
    parts['ground'] = losses.grounding_loss(inter['coa_tokens'], inter['coa_text'],
                                            inter['logit_scale'], positives,
                                            coa.has_sentence(batch['text_mask']))
  parts['coa'] = coa_fn(coa_visual, inter['coa_text'], inter['logit_scale'],
                        batch['text_key'], batch['sequence_key'])
  return losses.total_loss(parts, config.train), parts


def _all_finite(*trees):
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(trees)]))


def without_frozen_gradients(params, train_cfg):
  """params with the frozen ones (optim.frozen_mask) as constants of the loss: XLA then skips their
  backward pass (the optimiser gives them zero updates whatever their gradient)."""
  frozen = optim.frozen_mask(params, train_cfg)
  return jax.tree.map(lambda p, f: jax.lax.stop_gradient(p) if f else p, params, frozen)


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
  loss_fn = lambda p: compute_losses(without_frozen_gradients(p, config.train), state.batch_stats,
                                     batch, dropout_rng, model=model, config=config,
                                     token_centers=token_centers, coa_fn=coa_fn)
  (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
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
  """cost_jax.text_cache's cache when it applies (frozen, dropout-free text encoder; a model with
  COST's text_encoder_features and text_features=; one process: the cache encodes host-local
  sentences with the state's parameters), else None."""
  from cost_jax import text_cache
  if (not text_cache.enabled(config) or not hasattr(model, 'text_encoder_features')
      or jax.process_count() > 1):
    return None
  logging.info('Frozen text encoder: features cached per sentence (train.cache_text)')
  return text_cache.TextFeatureCache(config, model)


def _save(ckpt, step, state):
  if step not in ckpt.manager.all_steps():
    ckpt.save(step, state, {'next_step': step}, int(jax.device_get(state.nonfinite_step)))


def train_and_checkpoint(config, workdir, model=None):
  """Trains config.train.num_steps steps in `workdir`, resuming from its newest readable checkpoint
  and saving one every config.train.checkpoint_every steps and at the end. No evaluation runs here
  (tracking and metrics are cost_jax.track / cost_jax.evaluate).

  model: a linen module with COST's apply contract (default cost.COST(config.model)).

  Returns the final TrainState. Stops early (after saving) on SIGTERM / preemption, also while
  waiting for input, or when config.train.max_minutes is reached. Before creating anything:
  common.ConfigError naming a bad config field; workdir.InUseError when another trainer holds the
  workdir; workdir.ConfigMismatch naming each model field that differs from the workdir's
  config.json (then records the config). Raises checkpoints.NonFiniteError naming the step when the
  loss or gradients become NaN/Inf, and stream.DataError when the data gives no example.
  """
  common.validate(config)
  first = jax.process_index() == 0
  with workdir_lib.lock(workdir) if first else contextlib.nullcontext():
    workdir_lib.check_resume(workdir, config)
    if first:
      workdir_lib.record_config(workdir, config)
    return _train(config, workdir, model)


def _train(config, workdir, model):
  """train_and_checkpoint once the config is valid and the workdir is this process's."""
  from input_pipeline import stream
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
    restored = ckpt.restore_readable(abstract)
    if restored is not None:
      _, state, metadata = restored
      start = int(metadata['next_step'])
      logging.info('Resumed from %s at step %d', checkpoints.checkpoint_dir(workdir), start)

  logger = MetricsLogger(workdir, t.num_steps)
  flag = checkpoints.SigtermFlag() if jax.process_count() == 1 else None
  batches = pairs.iterate(start, stop=lambda: flag is not None and flag.raised)
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
      try:
        batch = next(batches)
      except stream.Interrupted:  # SIGTERM while the input stalled
        logging.warning('Preempted while waiting for input: saving step %d and exiting.', step)
        _save(ckpt, step, state)
        break
      if features is not None:
        batch = features.add_features(batch, state.params)
      state, metrics = step_fn(state, to_global(batch))
      done = step + 1
      if bar is not None:
        bar.update(1)
      if done % t.log_every == 0 or done == t.num_steps:
        metrics = jax.device_get(metrics)
        checkpoints.check_finite(jax.device_get(state.nonfinite_step), ckpt.latest_step())
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
  from cost_jax import cli
  from cost_jax import compilation_cache
  compilation_cache.enable()
  try:
    train_and_checkpoint(f.config, f.workdir)
  except (common.ConfigError, workdir_lib.InUseError, workdir_lib.ConfigMismatch,
          checkpoints.MismatchError) as e:
    raise cli.UsageError(str(e)) from None
  except (checkpoints.NonFiniteError, checkpoints.SaveError) as e:  # one line, exit status 1
    print(f'error: {e}', file=sys.stderr, flush=True)
    sys.exit(1)
  except _data_errors() as e:  # evaluated only when an error got this far
    raise cli.UsageError(str(e)) from None


def _data_errors():
  """The errors of data a user can fix: a dataset path, a sample-less dataset, a weights file."""
  from cost_jax.convert import core
  from input_pipeline import readers
  from input_pipeline import stream
  return readers.DatasetError, stream.DataError, core.ConversionError


if __name__ == '__main__':
  from absl import flags
  from ml_collections import config_flags
  config_flags.DEFINE_config_file('config', None, 'Training config file.', lock_config=True)
  flags.DEFINE_string('workdir', None, 'Checkpoints, TensorBoard events and metrics.jsonl go here.')
  flags.DEFINE_string('coordinator_address', '', 'host:port of process 0 (explicit multi-process).')
  flags.DEFINE_integer('num_processes', None, 'Number of processes (explicit multi-process).')
  flags.DEFINE_integer('process_id', None, 'This process (explicit multi-process).')
  flags.mark_flags_as_required(['config', 'workdir'])
  from cost_jax import cli
  cli.run(main)
