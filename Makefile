# Two commands on a fresh machine: `make test` and (with the peer runtime) `make demo`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Keras on TensorFlow and JAX, and Keras 2 (tf-keras): large, so in an environment of their
# own, built once and reused; tests/backends run there.
KERAS_VENV := .venv-keras
KERAS_STAMP := $(KERAS_VENV)/.installed
KERAS_PINS := 'tensorflow-cpu==2.21.*' 'tf-keras==2.21.*' 'jax==0.10.*'

.PHONY: setup setup-keras etcd browser test test-core test-backends lint demo bench bench-flower clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch first: 2.13.0 is the CPU wheel on this machine's disk; any other spec may pull CUDA.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

$(KERAS_STAMP): pyproject.toml
	$(PYTHON) -m venv $(KERAS_VENV)
	$(KERAS_VENV)/bin/pip install --quiet --upgrade pip
	$(KERAS_VENV)/bin/pip install --quiet $(KERAS_PINS) -e '.[tf,jax,test]'
	touch $(KERAS_STAMP)

setup-keras: $(KERAS_STAMP)

# etcd orders the multi-node ledger (tests start real members); Debian's etcd-server package.
etcd:
	@command -v etcd >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null; }
	@command -v etcd >/dev/null || { echo "error: etcd is not installed and apt-get could not install etcd-server; install etcd 3.4+ (or 3.5.3+) and put it on PATH" >&2; exit 1; }
	@command -v ip >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 >/dev/null; }

# The dashboard's browser tests drive Debian's Chromium through its chromedriver (Selenium
# is pointed at both; nothing is downloaded at test time).
browser:
	@{ command -v chromium >/dev/null && command -v chromedriver >/dev/null; } || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }
	@{ command -v chromium >/dev/null && command -v chromedriver >/dev/null; } || { echo "error: chromium and chromedriver are not installed and apt-get could not install them; install Debian's chromium and chromium-driver" >&2; exit 1; }

lint: $(STAMP)
	$(BIN)/ruff check openswarm swarmlearning tests benchmarks examples
	$(BIN)/ruff format --check openswarm swarmlearning tests benchmarks examples

test: $(STAMP) $(KERAS_STAMP) etcd browser
	$(MAKE) lint
	$(BIN)/pytest -q
	$(KERAS_VENV)/bin/pytest -q tests/backends

test-core: $(STAMP) etcd browser
	$(BIN)/pytest -q

test-backends: $(KERAS_STAMP) etcd
	$(KERAS_VENV)/bin/pytest -q tests/backends

# The main job: three sites train one model on skewed MNIST shares through a local swarm.
demo: $(STAMP)
	$(BIN)/openswarm demo

bench: $(STAMP)
	$(BIN)/python benchmarks/merge_bench.py

# Flower beside openswarm for benchmarks/vs_flower.py, in an environment of its own (Flower
# pins protobuf, fastapi, typer and rich); 1.42 still has the legacy start_server/start_client.
# Only numpy is needed besides, no torch. Options: make bench-flower FLOWER_ARGS=--quick
FLOWER_VENV := .venv-flower
FLOWER_STAMP := $(FLOWER_VENV)/.installed
FLOWER_PINS := 'flwr==1.42.0'
FLOWER_ARGS ?=

$(FLOWER_STAMP): pyproject.toml
	$(PYTHON) -m venv $(FLOWER_VENV)
	$(FLOWER_VENV)/bin/pip install --quiet --upgrade pip
	$(FLOWER_VENV)/bin/pip install --quiet $(FLOWER_PINS) -e .
	touch $(FLOWER_STAMP)

bench-flower: $(FLOWER_STAMP)
	$(FLOWER_VENV)/bin/python benchmarks/vs_flower.py $(FLOWER_ARGS)

clean:
	rm -rf $(VENV) $(KERAS_VENV) $(FLOWER_VENV) build *.egg-info .pytest_cache .ruff_cache
