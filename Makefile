# Developer entry points. Everything runs from .venv, which `make venv` creates (and refreshes
# when pyproject.toml changes). Pass extra arguments with PYTEST_ARGS, DEMO_ARGS, BENCH_ARGS and
# KAFKA_ARGS, e.g. `make test PYTEST_ARGS='-x -k frames'`.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := test

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.stamp
BENCH_STAMP := $(VENV)/.stamp-bench
PYTEST_ARGS ?=
DEMO_ARGS ?=
BENCH_ARGS ?=
KAFKA_ARGS ?=

.PHONY: venv test test-fast demo bench kafka-up kafka-down kafka-status clean distclean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "make venv: no python3.11 or python3 on PATH" >&2; exit 1; }
	@"$(PYTHON)" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "make venv: $(PYTHON) is older than Python 3.11" >&2; exit 1; }
	test -x $(BIN)/python || "$(PYTHON)" -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $(BENCH_STAMP)

# make exits 2 whatever failed; PYTEST_STATUS_FILE (set by .ci/run) receives pytest's own status.
test: venv
	@echo "$(BIN)/python -m pytest tests $(PYTEST_ARGS)"
	@status=0; $(BIN)/python -m pytest tests $(PYTEST_ARGS) || status=$$?; \
	  if [[ -n "$${PYTEST_STATUS_FILE:-}" ]]; then echo "$$status" > "$$PYTEST_STATUS_FILE"; fi; \
	  exit "$$status"

test-fast: venv
	$(BIN)/python -m pytest tests -m 'not slow' $(PYTEST_ARGS)

demo: venv
	$(BIN)/hashbridge demo $(DEMO_ARGS)

bench: $(BENCH_STAMP)
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

kafka-up: venv
	$(BIN)/hashbridge kafka up $(KAFKA_ARGS)

kafka-down: venv
	$(BIN)/hashbridge kafka down $(KAFKA_ARGS)

kafka-status: venv
	$(BIN)/hashbridge kafka status $(KAFKA_ARGS)

# Build and test leftovers; keeps .venv and the Kafka jar cache (~/.cache/hashbridge).
clean:
	rm -rf .pytest_cache .hypothesis build dist *.egg-info out demo-out hashbridge/kafka/target
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
