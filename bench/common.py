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

  `fn` must block until its result is ready (jax: block_until_ready; torch: `torch_synced`).
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


def torch_matmul_peak_gflops(n=2048, iters=10, warmup=2, device='cpu'):
  """The same measurement with torch.matmul (MKL/oneDNN on CPU, cuBLAS on GPU), for comparison."""
  import torch
  a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
  ms = median_ms(torch_synced(lambda: torch.matmul(a, b), device), iters, warmup)
  return 2 * n ** 3 / (ms * 1e-3) / 1e9


def torch_device(name):
  """The PyTorch device for the reference: 'auto' = 'cuda' when PyTorch sees a GPU, else 'cpu'."""
  import torch
  if name == 'auto':
    name = 'cuda' if torch.cuda.is_available() else 'cpu'
  return torch.device(name)


def torch_synced(fn, device):
  """`fn` made blocking: PyTorch on a GPU returns before its kernels finish, so synchronise."""
  import torch
  if torch.device(device).type != 'cuda':
    return fn

  def call():
    result = fn()
    torch.cuda.synchronize(device)
    return result
  return call


PRECISIONS = ('tf32', 'float32')


def set_matmul_precision(mode):
  """The float32 matmul/conv mode of both frameworks, so they are compared like for like.

  'tf32': TensorFloat-32 tensor cores for float32 matmuls and convolutions (JAX's default on
  NVIDIA Ampere and newer; PyTorch's default for convolutions only, so its matmuls are switched on
  too). 'float32': full float32 in both. On a CPU both modes compute in float32.
  """
  import torch
  if mode not in PRECISIONS:
    raise ValueError(f'precision {mode!r}: expected one of {PRECISIONS}')
  tf32 = mode == 'tf32'
  jax.config.update('jax_default_matmul_precision', 'tensorfloat32' if tf32 else 'float32')
  torch.set_float32_matmul_precision('high' if tf32 else 'highest')
  torch.backends.cudnn.allow_tf32 = tf32


def define_framework_flags():
  """The flags both benchmarks share: the peak test's size, and PyTorch's threads, device and the
  matmul mode of both frameworks (see setup_frameworks)."""
  from absl import flags
  flags.DEFINE_integer('peak_size', 2048, 'Side of the square matrices of the peak test.')
  flags.DEFINE_integer('threads', 0, 'Threads for PyTorch; 0 = os.cpu_count(), as XLA uses.')
  flags.DEFINE_string('torch_device', 'auto', "PyTorch device: 'auto' (cuda if available), 'cpu', "
                      "'cuda'.")
  flags.DEFINE_enum('precision', None, PRECISIONS, 'float32 matmul/conv mode of both '
                    'frameworks; unset = their defaults.')


def setup_frameworks(flag_values):
  """Applies define_framework_flags' flags: PyTorch's thread count and both frameworks' matmul mode.
  Returns (threads, torch device)."""
  import torch
  threads = flag_values.threads or os.cpu_count()
  torch.set_num_threads(threads)
  if flag_values.precision:
    set_matmul_precision(flag_values.precision)
  return threads, torch_device(flag_values.torch_device)


def compile_with_flops(jitted, *args):
  """(compiled program, its FLOPs per call from XLA's cost analysis) for `jitted(*args)`.

  Call the returned program rather than `jitted`, which would compile a second time. The analysis
  is the compiled program's: on a GPU the lowered (uncompiled) one has none.
  """
  compiled = jitted.lower(*args).compile()
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):  # older JAX: one dict per device program
    analysis = analysis[0]
  return compiled, float(analysis['flops'])


def compiled_flops(jitted, *args):
  """FLOPs of one call of `jitted(*args)` from XLA's cost analysis of the compiled program."""
  return compile_with_flops(jitted, *args)[1]


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
  line = (f'{model}, {os.cpu_count()} cores, jax backend {jax.default_backend()} '
          f'({devices[0].device_kind}), jax {jax.__version__}')
  try:
    import torch
    line += f', torch {torch.__version__}'
    if torch.cuda.is_available():
      line += f' (cuda {torch.version.cuda}, {torch.cuda.get_device_name()})'
  except ImportError:
    pass
  return line


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
