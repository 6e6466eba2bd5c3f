# stanchion: a NATS Streaming server. `make help` lists the targets.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TESTSTAMP := $(VENV)/.installed-test
NODESTAMP := tests/interop/node_modules/.installed

.DEFAULT_GOAL := help
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: bench-memory help venv install systemd-tools test test-unit test-integration test-cluster test-interop lint fmt proto cluster bench soak clean

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-18s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e .
	@touch $@

$(TESTSTAMP): $(STAMP)
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

$(NODESTAMP): tests/interop/package.json
	cd tests/interop && npm install --no-audit --no-fund --loglevel=error
	@touch $@

venv: $(STAMP) ## Create the virtualenv in .venv and install stanchion

install: $(STAMP) ## Same as venv

lint: $(TESTSTAMP) ## Format check and lint (ruff)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

fmt: $(TESTSTAMP) ## Format the code
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

systemd-tools: ## systemd-analyze and systemd-sysusers for the deploy/ tests (Debian's systemd)
	@command -v systemd-analyze >/dev/null && command -v systemd-sysusers >/dev/null || \
		{ $(SUDO) apt-get update && $(SUDO) apt-get install -y --no-install-recommends systemd; }

test: $(TESTSTAMP) $(NODESTAMP) systemd-tools lint ## Everything CI runs: lint, unit, integration, cluster and interop tests
	$(BIN)/python -m pytest -q tests

test-unit: $(TESTSTAMP) systemd-tools ## Unit tests only (no sockets)
	$(BIN)/python -m pytest -q tests/unit

test-integration: $(TESTSTAMP) ## One node with a real nats-server
	$(BIN)/python -m pytest -q tests/integration

test-cluster: $(TESTSTAMP) ## Three node processes
	$(BIN)/python -m pytest -q tests/cluster

test-interop: $(TESTSTAMP) $(NODESTAMP) ## The official Node.js client against a node
	$(BIN)/python -m pytest -q tests/interop

proto: ## Regenerate protocol/pb from stan.proto
	$(BIN)/pip install -q 'grpcio-tools>=1.85'
	cd protocol/pb && ../../$(BIN)/python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. stan.proto

cluster: $(STAMP) ## Run nats-server and three nodes (a, b, c) in the foreground; Ctrl-C stops all
	$(BIN)/python -m cluster.devcluster

bench: $(STAMP) ## Benchmark suite, one table: 1 and 3 nodes vs raw nats-py (BENCH_ARGS=--quick, --csv=F)
	$(BIN)/python -m cluster.bench_suite $(BENCH_ARGS)

bench-memory: $(STAMP) ## Memory of one node holding 1M messages while a subscriber reads them all
	$(BIN)/python -m cluster.bench_memory $(BENCH_ARGS)

soak: $(TESTSTAMP) ## Three nodes under traffic, nodes killed at random; checks no acked message is lost (SOAK_SECONDS=180, SOAK_ARGS=--keep)
	$(BIN)/python tests/soak/soak.py $(if $(SOAK_SECONDS),--seconds $(SOAK_SECONDS)) $(SOAK_ARGS)

clean: ## Remove the virtualenv and local data
	rm -rf $(VENV) .cluster tests/interop/node_modules
