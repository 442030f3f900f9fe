"""Shared test set-up: the `heavy` marker, no GPU/TPU probing on CPU machines, and JAX's persistent
compilation cache (COST_JAX_COMPILATION_CACHE, which `make test` points into .venv; subprocesses
inherit it), so tests that compile the same program share one compilation."""

import os

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
