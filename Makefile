SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DELETE_ON_ERROR:
.DEFAULT_GOAL := help
MAKEFLAGS += --warn-undefined-variables
MAKEFLAGS += --no-builtin-rules

# Tool versions live in pyproject.toml's `dev` extra (grpcio-tools, buf-bin, mypy-protobuf,
# ruff, mypy, import-linter); `make install` puts exactly those into the virtual environment.
PYTHON_BOOT ?= python3
VENV ?= .venv
# When a virtual environment is already active (VIRTUAL_ENV set), use it instead of making one.
ifdef VIRTUAL_ENV
VENV := $(VIRTUAL_ENV)
endif
PY := $(VENV)/bin/python
BUF := $(VENV)/bin/buf
STAMP := $(VENV)/.installed
PROTODEPS := build/protodeps
# Generated code is imported by proto package (`from hplus.hospital.v1 import ...`).
export PYTHONPATH := gen:.

.PHONY: help
help: ## List the targets.
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk -F':.*?## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@[ -x $(PY) ] || $(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

.PHONY: install
install: $(STAMP) ## Create the virtual environment and install hplus with its dev tools.

.PHONY: protodeps
protodeps: $(STAMP) ## Copy google/rpc and google/type protos from googleapis-common-protos for buf.
	$(PY) -m tools.protobuild deps --out $(PROTODEPS)

.PHONY: gen
gen: $(STAMP) ## Regenerate gen/ from proto/ (deletes gen/ first).
	$(PY) -m tools.protobuild gen --proto proto --out gen

.PHONY: generate
generate: gen ## Alias of gen.

.PHONY: check-gen
check-gen: $(STAMP) ## Fail when gen/ is stale (differs from what proto/ generates) or not committed.
	$(PY) -m tools.protobuild check --proto proto --gen gen --scratch build/check-gen

.PHONY: lint
lint: protodeps ## ruff, mypy, import contracts (lint-imports), buf lint, buf format.
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(VENV)/bin/lint-imports --no-cache
	$(BUF) lint proto
	$(BUF) format -d --exit-code proto

.PHONY: format
format: $(STAMP) ## Format Python and proto sources in place.
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .
	$(BUF) format -w proto

.PHONY: breaking
breaking: protodeps ## buf breaking (WIRE_JSON) against the latest frozen release.
	latest=$$($(PY) -m tools.protobuild latest-release); \
	echo "buf breaking against release $$latest"; \
	$(BUF) breaking proto --against "$$latest"

.PHONY: compat-window
compat-window: $(STAMP) ## Gate the working tree against the last 5 frozen releases.
	$(VENV)/bin/hplus compat window proto --releases 5

.PHONY: test
test: $(STAMP) ## Run the test suite (integration tests run when PostgreSQL/Redis answer).
	$(PY) -m pytest

.PHONY: run
run: $(STAMP) ## Start a cloud node and three simulated hospitals (REST, SOAP, DB) dialing in; state under var/.
	$(PY) -m tools.demo --var var

.PHONY: bench
bench: $(STAMP) ## Run the benchmarks under bench/.
	@ls bench/*/__main__.py >/dev/null 2>&1 || { echo "no benchmarks yet"; exit 0; }
	for b in bench/*/__main__.py; do mod=$$(dirname $$b | tr / .); $(PY) -m $$mod; done

.PHONY: ci
ci: lint check-gen breaking compat-window test ## What CI runs.

.PHONY: clean
clean: ## Remove build output and caches (keeps the virtual environment).
	rm -rf build .pytest_cache .mypy_cache .ruff_cache .import_linter_cache
