# Two commands on a fresh machine: `make test` and (with the peer runtime) `make demo`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup etcd test lint demo bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch first: 2.13.0 is the CPU wheel on this machine's disk; any other spec may pull CUDA.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

# etcd orders the multi-node ledger (tests start real members); Debian's etcd-server package.
etcd:
	@command -v etcd >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null; }
	@command -v etcd >/dev/null || { echo "error: etcd is not installed and apt-get could not install etcd-server; install etcd 3.4+ (or 3.5.3+) and put it on PATH" >&2; exit 1; }
	@command -v ip >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 >/dev/null; }

lint: $(STAMP)
	$(BIN)/ruff check openswarm swarmlearning tests benchmarks examples
	$(BIN)/ruff format --check openswarm swarmlearning tests benchmarks examples

test: $(STAMP) etcd
	$(MAKE) lint
	$(BIN)/pytest -q

# The main job: three sites train one model on skewed MNIST shares through a local swarm.
demo: $(STAMP)
	$(BIN)/openswarm demo

bench: $(STAMP)
	$(BIN)/python benchmarks/merge_bench.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
