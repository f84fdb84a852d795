# Liên thông — the two commands that matter: `make run` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: asyncapi-check run test install lint typecheck contracts contracts-check unit integration e2e bench clean watch lag kafka cluster fault

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

# Node clients the tests drive (an agency's signer in JavaScript), pinned by their lock file.
NODE_SIGNER := tests/node/signer
NODE_STAMP := $(NODE_SIGNER)/node_modules/.installed

$(NODE_STAMP): $(NODE_SIGNER)/package.json $(NODE_SIGNER)/package-lock.json
	cd $(NODE_SIGNER) && npm ci --no-audit --no-fund
	touch $(NODE_STAMP)

install: $(STAMP) $(NODE_STAMP)

# The official AsyncAPI parser (npm) checks the generated contracts; its lock file pins it.
CONTRACTS_NODE := contracts/node
CONTRACTS_NODE_STAMP := $(CONTRACTS_NODE)/node_modules/.installed
$(CONTRACTS_NODE_STAMP): $(CONTRACTS_NODE)/package.json $(CONTRACTS_NODE)/package-lock.json
	@command -v npm >/dev/null || { echo "the contract check needs Node 20+ and npm"; exit 2; }
	cd $(CONTRACTS_NODE) && npm ci --ignore-scripts --no-audit --no-fund
	touch $@
install: $(CONTRACTS_NODE_STAMP)

asyncapi-check: install  ## the AsyncAPI document in the official parser, JSON Schemas in Ajv
	node $(CONTRACTS_NODE)/check.mjs

run: install  ## start the whole system on the embedded default
	$(BIN)/python -m deploy.dev

watch: install  ## print every event live
	$(BIN)/python -m deploy.watch

lag: install  ## consumer lag per group, topic and partition (LAG_ARGS=--watch 2 to follow)
	$(BIN)/python -m deploy.lag $(LAG_ARGS)

kafka: install  ## fetch the Apache Kafka jars from Maven Central into ~/.cache/lienthong
	$(BIN)/python -m deploy.kafka fetch

cluster: install  ## a three-broker KRaft cluster on loopback, in the foreground
	$(BIN)/python -m deploy.kafka cluster

fault: install  ## the slow fault tests: broker SIGKILL in a 3-node cluster, broker restart
	$(BIN)/python -m pytest -q -p no:cacheprovider -m slow tests/e2e/test_broker_faults.py

test: install  ## lint, types, contracts, unit, integration and end-to-end tests
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy contracts services deploy
	$(BIN)/python -m contracts.generate --check
	node $(CONTRACTS_NODE)/check.mjs
	$(BIN)/python -m pytest -q -p no:cacheprovider

unit: install
	$(BIN)/python -m pytest -q tests/unit

integration: install
	$(BIN)/python -m pytest -q tests/integration

e2e: install
	$(BIN)/python -m pytest -q tests/e2e

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy contracts services deploy

contracts: install  ## regenerate JSON Schema and AsyncAPI from the models
	$(BIN)/python -m contracts.generate

bench: install  ## benchmarks: print figures and ratios against a same-run baseline (BENCH_ARGS=--duration 60 ...)
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf .run .pytest_cache .mypy_cache .ruff_cache
