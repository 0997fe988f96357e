# The two commands of a fresh clone: `make demo` and `make test`. Each sets itself up first.
# TORCH_SPEC pins the CPU build available on the project machines; override it for a GPU build.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.ditkit-installed

.PHONY: demo test setup lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check "$(TORCH_SPEC)" 2>&1 | grep -v "is ignored" || true
	$(PY) -c "import torch" || { echo "torch install failed"; exit 1; }
	$(PY) -m pip install -q --disable-pip-version-check -e ".[dev]" 2>&1 | grep -v "is ignored" || true
	$(PY) -c "import ditkit, pytest, ruff" || { echo "ditkit install failed"; exit 1; }
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/ditkit generate --classes all --n-per-class 6 --out demo.png
	@echo "open demo.png (one row per class: $$($(PY) -c 'from ditkit.data.shapes import CLASSES; print(", ".join(CLASSES))'))"

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

test: lint
	$(PY) -m pytest

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache demo.png
