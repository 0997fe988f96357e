# The two commands of a fresh clone: `make demo` and `make test`. Each sets itself up first.
# TORCH_SPEC pins the CPU build available on the project machines; override it for a GPU build.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q --disable-pip-version-check
CORE := $(VENV)/.ditkit-core
DEV := $(VENV)/.ditkit-dev

.PHONY: demo test setup lint clean

$(CORE): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) "$(TORCH_SPEC)" 2>&1 | grep -v "is ignored" || true
	$(PIP) -e . 2>&1 | grep -v "is ignored" || true
	$(PY) -c "import torch, ditkit" || { echo "setup failed: torch or ditkit did not install"; exit 1; }
	touch $(CORE)

$(DEV): $(CORE)
	$(PIP) -e ".[dev,bench,video,interop]" 2>&1 | grep -v "is ignored" || true
	$(PY) -c "import pytest, ruff" || { echo "setup failed: test tools did not install"; exit 1; }
	touch $(DEV)

setup: $(DEV)

demo: $(CORE)
	$(VENV)/bin/ditkit generate --classes all --n-per-class 6 --out demo.png
	@echo "demo.png: one row per class ($$($(PY) -c 'from ditkit.shapes.data import CLASSES; print(", ".join(CLASSES))'))"

lint: $(DEV)
	$(VENV)/bin/ruff check src tests benchmarks

test: lint
	$(PY) -m pytest

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache demo.png
