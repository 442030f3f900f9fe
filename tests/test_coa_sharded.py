"""Sharded CoA (shard_map + all_gather over 8 fake CPU devices) equals the one-device loss.

JAX fixes its device count when it starts, so the 8-device part runs in a subprocess.
"""

import json
import os
import subprocess
import sys
import tempfile
import textwrap

from tests.xla_flags import FAST_COMPILE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# Subprocesses that compile the same programs (restarts, reruns) share XLA's persistent cache.
COMPILATION_CACHE = {
    'JAX_COMPILATION_CACHE_DIR': os.path.join(tempfile.gettempdir(), 'cost-jax-test-xla-cache'),
    'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0',
    'JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES': '0',
}


def run_with_devices(code, num_devices, timeout=600, env=None):
  """Runs python `code` with `num_devices` fake CPU devices; returns the JSON of its last line."""
  full_env = dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='2',
                  XLA_FLAGS=f'--xla_force_host_platform_device_count={num_devices} {FAST_COMPILE}',
                  PYTHONPATH=ROOT, **COMPILATION_CACHE)
  full_env.update(env or {})
  proc = subprocess.run([sys.executable, '-c', textwrap.dedent(code)], cwd=ROOT, env=full_env,
                        capture_output=True, text=True, timeout=timeout)
  assert proc.returncode == 0, proc.stderr[-4000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


SHARDED_COA = """
import json
import jax, jax.numpy as jnp, numpy as np
import ml_collections
from cost_jax import losses, sharding
from tests.test_losses import numpy_coa

assert jax.device_count() == 8
rng = np.random.default_rng(0)
B, C = 16, 8
v = rng.normal(size=(B, C)).astype(np.float32); v /= np.linalg.norm(v, axis=1, keepdims=True)
t = rng.normal(size=(B, C)).astype(np.float32); t /= np.linalg.norm(t, axis=1, keepdims=True)
# Sentences repeated across sequences (and across devices): samples 0, 5, 13 share one.
text_key = np.arange(B, dtype=np.int32) + 100; text_key[[5, 13]] = text_key[0]
sequence_key = np.arange(B, dtype=np.int32); sequence_key[9] = sequence_key[2]
scale = np.float32(np.log(1 / 0.07))

def value_and_grads(fn):
  return jax.value_and_grad(lambda v, t, s: fn(v, t, s, text_key, sequence_key),
                            argnums=(0, 1, 2))

ref_loss, ref_grads = jax.jit(value_and_grads(losses.coa_loss))(v, t, scale)
out = {'numpy_rel': abs(float(ref_loss) - numpy_coa(v, t, float(scale), text_key, sequence_key))
       / float(ref_loss)}
for shape in [(8, 1), (4, 2), (2, 4)]:
  cfg = ml_collections.ConfigDict({'shape': shape, 'axes': ('data', 'fsdp')})
  mesh = sharding.make_mesh(cfg)
  put = lambda x: jax.device_put(x, sharding.batch_sharding(mesh, cfg))
  fn = losses.coa_loss_sharded(mesh, tuple(cfg.axes))
  grad_fn = jax.jit(jax.value_and_grad(fn, argnums=(0, 1, 2)))
  loss, grads = grad_fn(put(v), put(t), jax.device_put(scale, sharding.replicated(mesh)),
                        put(text_key), put(sequence_key))
  rel = [float(np.linalg.norm(np.asarray(g) - np.asarray(r)) / np.linalg.norm(np.asarray(r)))
         for g, r in zip(grads, ref_grads)]
  out[str(shape)] = {'loss_rel': abs(float(loss) - float(ref_loss)) / float(ref_loss),
                     'grad_rel': rel}
distinct = losses.coa_loss(v, t, scale, np.arange(B), np.arange(B))
out['distinct_gap'] = abs(float(distinct) - float(ref_loss))
print(json.dumps(out))
"""


def test_sharded_coa_matches_one_device_on_8_fake_devices():
  out = run_with_devices(SHARDED_COA, 8)
  assert out['numpy_rel'] < 1e-5
  for shape in ['(8, 1)', '(4, 2)', '(2, 4)']:
    assert out[shape]['loss_rel'] <= 1e-6, out
    assert max(out[shape]['grad_rel']) <= 1e-5, out
  # Repeated sentences are positives: treating them as negatives would change the loss.
  assert out['distinct_gap'] > 1e-3
