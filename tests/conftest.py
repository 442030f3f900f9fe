"""Shared test set-up: the `heavy` marker, no GPU/TPU probing on CPU machines, JAX's persistent
compilation cache (COST_JAX_COMPILATION_CACHE, which `make test` points into .venv; subprocesses
inherit it), so tests that compile the same program share one compilation, and XLA's CPU backend
at optimisation level 0 (FAST_COMPILE).

Compilation is most of the suite's time: at level 0 XLA:CPU compiles the tiny model's training step
about 3x faster (measured on the 2-core CPU: the text-cache step test 70 s -> 22 s, the bf16 test
33 s -> 13 s). The programs compute the same functions; only fusion and vectorisation change, which
moves float rounding as another CPU would, and every test compares floats by norm with tolerances
that hold across machines. Set XLA_FLAGS with another --xla_backend_optimization_level to override.
"""

import os

from tests.xla_flags import FAST_COMPILE

if 'xla_backend_optimization_level' not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' ' + FAST_COMPILE).strip()

os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')

import pytest

from cost_jax import compilation_cache

compilation_cache.enable()

try:  # triton (torch.compile's compiler, in the test extras) segfaults when it is first imported
  import triton  # noqa: F401  after TensorFlow; loading it first lets any test file order work
except ImportError:
  pass


def pytest_addoption(parser):
  parser.addoption('--heavy', action='store_true', default=False,
                   help='also run tests marked heavy (minutes each on a 2-core CPU)')


def pytest_collection_modifyitems(config, items):
  if config.getoption('--heavy'):
    return
  skip = pytest.mark.skip(reason='heavy: run with --heavy (make test-all)')
  for item in items:
    if 'heavy' in item.keywords:
      item.add_marker(skip)
