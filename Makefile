# Eventplane developer entry points. Works on a fresh machine with only python3 and make:
# Poetry is installed into its own tool environment if missing, the project into ./.venv.

SHELL := /bin/bash
PYTHON ?= python3
POETRY_HOME ?= $(HOME)/.local/share/eventplane-poetry
POETRY ?= $(shell command -v poetry 2>/dev/null || echo $(POETRY_HOME)/bin/poetry)
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: install demo test lint bench clean help

help:
	@echo "make demo    run the main job on the embedded default (SQLite + embedded bus, no servers)"
	@echo "make test    run the whole test suite (throwaway PostgreSQL/NATS unless EVENTPLANE_TEST_*_URL set)"
	@echo "make lint    ruff (lint + format check) + mypy --strict on eventplane/ + import-linter layer contracts"
	@echo "make bench   store, bus and end-to-end benchmarks (ratios against the raw drivers)"
	@echo "make install set up only (Poetry in its own env, project into ./.venv)"

$(POETRY_HOME)/bin/poetry:
	$(PYTHON) -m venv $(POETRY_HOME)
	$(POETRY_HOME)/bin/pip install --quiet --disable-pip-version-check poetry

$(BIN)/.installed: pyproject.toml poetry.lock | $(POETRY)
	POETRY_VIRTUALENVS_IN_PROJECT=true POETRY_VIRTUALENVS_CREATE=true \
		$(POETRY) install --no-interaction --quiet
	@# Byte-compile once: with PYTHONDONTWRITEBYTECODE set (common in CI and sandboxes) every
	@# evtctl call and test subprocess would otherwise recompile sqlalchemy & co from source.
	@$(BIN)/python -m compileall -q -j 0 $(VENV)/lib >/dev/null 2>&1 || true
	@touch $@

install: $(BIN)/.installed

# The real loop on the embedded default in a scratch directory (SQLite store + embedded bus,
# no servers): apply --wait drives the runtime and projections itself when no `evtctl run`
# is up, then the read model, the resource's history and the projection's lag are shown.
demo: install
	@set -e; demo=$$(mktemp -d); ex="$(CURDIR)/examples"; evtctl="$(CURDIR)/$(BIN)/evtctl"; \
	cd "$$demo"; echo "# scratch directory: $$demo"; \
	echo "$$ evtctl apply Organization -f examples/org.yaml --wait"; \
	"$$evtctl" apply Organization -f "$$ex/org.yaml" --wait; \
	echo; echo "$$ evtctl get Organization"; "$$evtctl" get Organization; \
	echo; echo "$$ evtctl get Organization acme -o json"; "$$evtctl" get Organization acme -o json; \
	echo; echo "$$ evtctl describe Organization acme"; "$$evtctl" describe Organization acme; \
	echo; echo "$$ evtctl projections list"; "$$evtctl" projections list; \
	rm -rf "$$demo"

test: install
	@$(BIN)/python -m compileall -q -j 0 eventplane apps evtctl >/dev/null 2>&1 || true
	$(BIN)/pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: install
	$(BIN)/python benchmarks/store.py
	$(BIN)/python benchmarks/bus.py
	$(BIN)/python benchmarks/e2e.py

clean:
	rm -rf .eventplane .pytest_cache .mypy_cache .ruff_cache .hypothesis
