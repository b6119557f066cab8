# Two commands matter: `make run` serves on the embedded default (sqlite), and
# `make test` installs everything the tests need, starts the local servers and runs them.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
PYTEST_ARGS ?=

.PHONY: run test schemathesis lint format bench compare clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip

# checkov (tests/deploy) pins boto3, botocore and packaging below what the service needs:
# it gets a venv of its own, $(VENV)/checkov, from requirements-checkov.lock.
# Hashed runtime and bench locks (scripts/lock.sh), then the project itself (editable,
# no re-resolution).
$(VENV)/.installed: requirements.lock requirements-bench.lock pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q --disable-pip-version-check --require-hashes \
		-r requirements.lock -r requirements-bench.lock
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

$(VENV)/.installed-test: requirements-test.lock requirements-checkov.lock $(VENV)/.installed
	$(BIN)/pip install -q --disable-pip-version-check -r requirements-test.lock
	$(PYTHON) -m venv $(VENV)/checkov
	$(VENV)/checkov/bin/pip install -q --disable-pip-version-check -r requirements-checkov.lock
	touch $@

# The production entry point: bounded for direct exposure, drains on SIGTERM.
run: $(VENV)/.installed
	HOST=$(HOST) PORT=$(PORT) $(BIN)/python -m app.server

# Servers are started by the tests themselves (testing/servers/) on loopback ports of
# their own and stopped when the session ends, whatever its outcome. The compose tests
# (tests/compose/) start dockerd if none runs, and stop only the one they started.
test: $(VENV)/.installed-test
	scripts/install-test-deps.sh
	scripts/install-docker.sh
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	ATOMIC_COUNTER_REQUIRE_SERVERS=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

# Also part of `make test`: schemathesis (all checks, 300 examples per operation) against
# the live service with sqlite and redis.
schemathesis: $(VENV)/.installed-test
	scripts/install-test-deps.sh
	ATOMIC_COUNTER_REQUIRE_SERVERS=1 $(BIN)/python -m pytest tests/api/test_schemathesis.py

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format:
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The performance ratios in one run, loaded by wrk (Debian): group commit on vs off per store,
# DynamoDB Local vs a naive app, service vs bare FastAPI, the bench client vs wrk, start-up,
# RSS and p99, batches of 100 vs webdis (Debian; started on loopback by the script), atomic
# batches vs single requests per store (benchmarks/perf.py). The older null/sqlite/redis
# overhead table: `$(BIN)/python benchmarks/service_overhead.py`.
BENCH_ARGS ?=
bench: $(VENV)/.installed-test
	@command -v wrk >/dev/null || { [ "$$(id -u)" -eq 0 ] && apt-get install -y -qq wrk >/dev/null; } \
		|| { echo "wrk is needed: apt-get install wrk"; exit 1; }
	@command -v webdis >/dev/null || { [ "$$(id -u)" -eq 0 ] && apt-get install -y -qq webdis >/dev/null; } \
		|| { echo "webdis is needed: apt-get install webdis"; exit 1; }
	scripts/install-test-deps.sh
	$(BIN)/python benchmarks/perf.py $(BENCH_ARGS)

# Every store side by side, in one bounded run on the local servers (request counts, not
# durations): speed through the service with `atomic-counter bench`, the network-fault and
# Redis failover runs of testing/, and the AWS cost table of benchmarks/cost.py. Writes
# docs/comparison.md, and its JSON and charts under docs/comparison/. COMPARE_ARGS: e.g.
# "--requests 500" for a quicker run.
COMPARE_ARGS ?=
compare: $(VENV)/.installed-test
	scripts/install-test-deps.sh
	$(BIN)/python benchmarks/compare_stores.py $(COMPARE_ARGS)

clean:
	rm -rf $(VENV) .cache data .pytest_cache .mypy_cache .ruff_cache
