# mdeploy developer entry points. Every target installs what it needs first (idempotent:
# the virtual environment is re-synced only when pyproject.toml changes).
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml requirements-onnx2tf.txt | sha256sum | cut -c1-16)
RECIPE ?= recipes/cpm_android.yaml

.PHONY: setup quickstart test bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml requirements-onnx2tf.txt
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found (mdeploy needs Python 3.11; set PYTHON=...)" >&2; exit 3; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	# ONNX import: onnx2tf pins old TF/numpy/protobuf exactly, so it joins with --no-deps.
	$(BIN)/python -m pip install --quiet --no-deps -r requirements-onnx2tf.txt
	rm -f $(VENV)/.installed-*
	touch $@

## The main job: build the quickstart recipe.
quickstart: setup
	$(BIN)/mdeploy build $(RECIPE)

## The full test suite (what CI runs).
test: setup
	$(BIN)/python -m pytest

## Measurements recorded in docs/benchmarks.md.
bench: setup
	cd benchmarks && ../$(BIN)/python cli_startup.py
	cd benchmarks && ../$(BIN)/python build_times.py
	cd benchmarks && ../$(BIN)/python input_pipeline.py
	cd benchmarks && ../$(BIN)/python train_throughput.py
	cd benchmarks && ../$(BIN)/python quickstart.py

clean:
	rm -rf build dist .pytest_cache
