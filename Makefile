# Two commands matter: `make demo` (the main job) and `make test` (everything, from a fresh clone).
# Both create .venv and install the pinned development set on first use only.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DEPS := $(VENV)/.deps-installed
EDITABLE := $(VENV)/.roiops-editable
EXT := roiops/_C.abi3.so
CSRC := $(shell find csrc -name '*.cpp' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh')
HYPOTHESIS_PROFILE ?= ci
PYTEST_ARGS ?=
BENCH_ARGS ?=

.PHONY: all build test test-thorough mutate bench demo cuda-check gpu-check lint clean

all: build

$(DEPS): requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	touch $@

$(EDITABLE): $(DEPS) pyproject.toml setup.py
	$(PY) -m pip install -q --disable-pip-version-check --no-build-isolation --no-deps -e .
	touch $@

# Incremental (ninja) rebuild of the native extension when any csrc/ file changes.
$(EXT): $(EDITABLE) $(CSRC)
	MAX_JOBS=$${MAX_JOBS:-2} $(PY) setup.py -q build_ext --inplace
	touch $@

build: $(EXT)

test: build
	$(PY) -m pytest tests -q --hypothesis-profile=$(HYPOTHESIS_PROFILE) $(PYTEST_ARGS)

# Before landing a kernel change: the roiops suite with 20x the hypothesis examples from a fresh
# draw (pass HYPOTHESIS_SEED=N to replay one), then the planted-bug check of csrc/mutations.toml.
HYPOTHESIS_SEED ?=
test-thorough: build
	$(PY) -m pytest tests/roiops -q -p no:cacheprovider --hypothesis-profile=thorough \
		$(if $(HYPOTHESIS_SEED),--hypothesis-seed=$(HYPOTHESIS_SEED)) $(PYTEST_ARGS)

mutate: build
	$(PY) tools/mutate.py

# Kernel microbenchmarks on pytest-benchmark (each run also saved under .benchmarks/ for
# --benchmark-compare) and their ratio table; then the two scripts: CUDA kernels (skips without a
# GPU) and whole models. BENCH_ARGS go to pytest, e.g. BENCH_ARGS="--threads 1 -k nms".
bench: build
	mkdir -p benchmarks/results
	$(PY) -m pytest benchmarks --benchmark-only --benchmark-autosave \
		--benchmark-json=benchmarks/results/kernels.json $(BENCH_ARGS)
	$(PY) benchmarks/ratios.py benchmarks/results/kernels.json
	$(PY) benchmarks/bench_cuda.py
	$(PY) benchmarks/bench_models.py

demo: build
	$(PY) -m maskzoo demo --out out/demo

# Compiles every CUDA source with nvcc (no GPU needed) into a throw-away build, then checks that
# every op with a CPU kernel also has a CUDA kernel in it.
cuda-check: $(DEPS)
	PY=$(PY) bash tools/cuda_check.sh

# On a machine with a CUDA GPU: build for it, CUDA tests, maskzoo smoke, GPU benchmarks, all into
# $(GPU_CHECK_OUT) (see tools/gpu_check.sh). The machine's own python3: no venv, nothing installed.
GPU_CHECK_OUT ?= out/gpu-check
gpu-check:
	PY=$(PYTHON) bash tools/gpu_check.sh $(GPU_CHECK_OUT)

lint: $(DEPS)
	$(PY) -m ruff check roiops maskzoo tests benchmarks tools

clean:
	rm -rf build roiops/*.so
