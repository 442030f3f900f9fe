"""What every benchmark shares: timing, the measured float32 matmul peak, and the key=value line.

A benchmark prints what it timed beside each number and ends with one line of `key=value` figures
(`format_key_values`), which `parse_key_values` reads back (scripts and tests use it).
"""

import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np


def median_ms(fn, iters, warmup):
  """Median wall time of `fn()` in milliseconds over `iters` calls after `warmup` calls.

  `fn` must block until its result is ready (jax: block_until_ready; torch eager on CPU is
  synchronous).
  """
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(iters):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return 1e3 * statistics.median(times)


def matmul_peak_gflops(n=2048, iters=10, warmup=2):
  """The machine's float32 matmul throughput in GFLOP/s: jitted jnp.dot of two [n, n] matrices.

  2 n^3 FLOPs per product; the median of `iters` timed products. This is the "peak" that achieved
  GFLOP/s are compared with (a measured, not a datasheet, limit).
  """
  key_a, key_b = jax.random.split(jax.random.key(0))
  a = jax.random.normal(key_a, (n, n), jnp.float32)
  b = jax.random.normal(key_b, (n, n), jnp.float32)
  dot = jax.jit(jnp.dot)
  ms = median_ms(lambda: dot(a, b).block_until_ready(), iters, warmup)
  return 2 * n ** 3 / (ms * 1e-3) / 1e9


def torch_matmul_peak_gflops(n=2048, iters=10, warmup=2):
  """The same measurement with torch.matmul (PyTorch's BLAS: MKL/oneDNN), for comparison."""
  import torch
  a, b = torch.randn(n, n), torch.randn(n, n)
  ms = median_ms(lambda: torch.matmul(a, b), iters, warmup)
  return 2 * n ** 3 / (ms * 1e-3) / 1e9


def compiled_flops(jitted, *args):
  """FLOPs of one call of `jitted(*args)` from XLA's cost analysis of the compiled program."""
  analysis = jitted.lower(*args).compile().cost_analysis()
  if isinstance(analysis, (list, tuple)):  # older JAX: one dict per device program
    analysis = analysis[0]
  return float(analysis['flops'])


def machine_description():
  """One line: platform, CPU model (from /proc/cpuinfo or lscpu), core count and JAX backend."""
  model = platform.processor() or platform.machine()
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          model = line.split(':', 1)[1].strip()
          break
  except OSError:
    pass
  devices = jax.devices()
  return (f'{model}, {os.cpu_count()} cores, jax backend {jax.default_backend()} '
          f'({devices[0].device_kind}), jax {jax.__version__}')


def to_numpy_tree(tree):
  """A pytree of arrays as numpy arrays (for copying weights across frameworks)."""
  return jax.tree_util.tree_map(np.asarray, tree)


def format_key_values(values):
  """The benchmark's last line: `k1=v1 k2=v2 ...`; floats with 4 significant digits."""
  parts = []
  for key, value in values.items():
    if isinstance(value, float):
      value = f'{value:.4g}'
    parts.append(f'{key}={value}')
  return ' '.join(parts)


def parse_key_values(line):
  """Inverse of `format_key_values`: {key: float or str}."""
  values = {}
  for part in line.split():
    key, value = part.split('=', 1)
    try:
      values[key] = float(value)
    except ValueError:
      values[key] = value
  return values
