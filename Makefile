# Two commands on a fresh machine: `make test` and (with the peer runtime) `make demo`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup test lint demo bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch first: 2.13.0 is the CPU wheel on this machine's disk; any other spec may pull CUDA.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check openswarm swarmlearning tests benchmarks examples
	$(BIN)/ruff format --check openswarm swarmlearning tests benchmarks examples

test: $(STAMP)
	$(MAKE) lint
	$(BIN)/pytest -q

# The main job: three sites train one model on skewed MNIST shares through a local swarm.
demo: $(STAMP)
	$(BIN)/openswarm demo

bench: $(STAMP)
	$(BIN)/python benchmarks/merge_bench.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
