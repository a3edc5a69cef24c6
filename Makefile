# ioacct: `make help` lists the targets (it reads the `## ` comments).
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
KAFKA_LIBS := deploy/kafka/target/libs/.built
BENCH_LIBS := deploy/bench/target/libs/.built

.DEFAULT_GOAL := help
.PHONY: help install bench-deps kafka-libs bench-libs system-deps run test test-unit test-integration bench chaos lint format clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-18s %s\n", $$1, $$2}'

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/.installed ## the virtualenv under .venv with ioacct and its dev tools

$(BIN)/.bench-installed: $(BIN)/.installed pyproject.toml
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $@

bench-deps: $(BIN)/.bench-installed ## quixstreams (pip extra `bench`): the bench's anchor (i) and its test

$(KAFKA_LIBS): deploy/kafka/pom.xml
	mvn -B -q -f deploy/kafka/pom.xml package
	touch $@

kafka-libs: $(KAFKA_LIBS) ## Apache Kafka's jars from Maven Central into deploy/kafka/target/libs

$(BENCH_LIBS): deploy/bench/pom.xml $(wildcard deploy/bench/src/main/java/io/ioacct/bench/*.java)
	mvn -B -q -f deploy/bench/pom.xml package
	touch $@

bench-libs: $(BENCH_LIBS) ## the bench's Kafka Streams anchor (h), built with its jars from Maven Central

system-deps: ## the Debian packages some tests need (fio, chromium, qemu): installs only the missing
	bash deploy/debian-packages.sh test

run: install kafka-libs ## broker + worker + a source (SOURCE=sim, the default, or qemu), until Ctrl-C
	$(if $(filter qemu,$(SOURCE)),bash deploy/debian-packages.sh qemu)
	$(BIN)/ioacct run $(if $(SOURCE),--source $(SOURCE))

test: install bench-deps kafka-libs bench-libs system-deps ## the whole suite: unit tests, then integration tests on a broker it starts
	$(BIN)/pytest

test-unit: install ## only the pure-logic tests (no broker)
	$(BIN)/pytest tests/unit

test-integration: install bench-deps kafka-libs bench-libs system-deps ## only the tests on the real broker
	$(BIN)/pytest tests/integration

bench: install bench-deps kafka-libs bench-libs ## throughput, latency and memory figures on a broker it starts (docs/performance.md)
	$(BIN)/ioacct bench

chaos: install kafka-libs ## the long chaos run: kills, broker restarts, hostile input; every number vs the oracle (docs/chaos.md)
	$(BIN)/python -m tests.chaos $(CHAOS_ARGS)

lint: install ## ruff, mypy and the import contracts, checking only (what CI runs)
	$(BIN)/ruff check streams tests
	$(BIN)/mypy streams
	$(BIN)/lint-imports

format: install ## ruff fixes and formats imports in place
	$(BIN)/ruff check --fix streams tests

clean: ## remove the virtualenv, built jars and local state (broker data too)
	rm -rf $(VENV) deploy/kafka/target deploy/bench/target .state
