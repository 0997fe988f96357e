# The two commands of a fresh clone: `make demo` and `make test`. Each sets itself up first.
# TORCH_SPEC pins torch 2.13.0, the version behind the results pages (measured with its CPU build, 2.13.0+cpu,
# which pip installs where its index serves the CPU wheels); override TORCH_SPEC for a CUDA build.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q --disable-pip-version-check
CORE := $(VENV)/.ditkit-core
DEV := $(VENV)/.ditkit-dev

.PHONY: demo test setup lint docs clean

$(CORE): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) "$(TORCH_SPEC)" 2>&1 | grep -v "is ignored" || true
	$(PIP) -e . 2>&1 | grep -v "is ignored" || true
	$(PY) -c "import torch, ditkit" || { echo "setup failed: torch or ditkit did not install"; exit 1; }
	touch $(CORE)

$(DEV): $(CORE)
	$(PIP) -e ".[dev,bench,video,interop,docs]" 2>&1 | grep -v "is ignored" || true
	$(PY) -c "import pytest, ruff, mkdocs, material, mkdocstrings" || { echo "setup failed: test or docs tools did not install"; exit 1; }
	touch $(DEV)

setup: $(DEV)

demo: $(CORE)
	$(VENV)/bin/ditkit generate --classes all --n-per-class 6 --out demo.png
	@echo "demo.png: one row per class ($$($(PY) -c 'from ditkit.shapes.data import CLASSES; print(", ".join(CLASSES))'))"

lint: $(DEV)
	$(VENV)/bin/ruff check src tests benchmarks scripts docs/hooks

# the docs site (site/): strict, so a broken link, a missing page or an API page whose module is gone fails
docs: $(DEV)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

test: lint docs
	$(PY) -m pytest

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache demo.png site
