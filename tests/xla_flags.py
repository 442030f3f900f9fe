"""XLA flags of the test suite (tests/conftest.py sets them for the test process; the tests' own
subprocesses pass them explicitly). A module of its own: subprocesses import it without conftest's
side effects (conftest imports triton, which must not load after TensorFlow)."""

# XLA's CPU backend at optimisation level 0: about 3x faster compilation of the tiny models; the
# same functions (only fusion and vectorisation change, as on another CPU).
FAST_COMPILE = '--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true'
