"""JAX's persistent compilation cache, shared by training, tracking, the benchmarks and the tests.

  from cost_jax import compilation_cache
  compilation_cache.enable()          # before the first jit compiles

A compiled XLA program is stored under the cache folder keyed by its HLO, the compile options and the
JAX/XLA version, so a second run of the same command (or a second test compiling the same model)
loads it instead of compiling again. The folder is, in order: the `path` argument, the environment
variable COST_JAX_COMPILATION_CACHE ('' or 'off' disables the cache), or ~/.cache/cost_jax/xla.
"""

import os

DEFAULT_DIR = os.path.join(os.path.expanduser('~'), '.cache', 'cost_jax', 'xla')
ENV = 'COST_JAX_COMPILATION_CACHE'


def cache_dir(path=None):
  """The folder `enable` would use, or None when the cache is switched off."""
  if path is None:
    path = os.environ.get(ENV, DEFAULT_DIR)
  if not path or path.lower() == 'off':
    return None
  return path


def enable(path=None, min_compile_seconds=0.5):
  """Turns the persistent cache on (idempotent); returns the folder, or None when disabled.

  min_compile_seconds: programs that compile faster than this are not stored (their load would
  save nothing).
  """
  import jax
  folder = cache_dir(path)
  if folder is None:
    return None
  if '://' not in folder:
    os.makedirs(folder, exist_ok=True)
  jax.config.update('jax_compilation_cache_dir', folder)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', float(min_compile_seconds))
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)
  return folder
