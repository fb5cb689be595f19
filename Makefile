# Flywheel: `make run` starts the embedded stack, `make test` proves it. Both set up first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The install is keyed on what decides it, so `make setup` is a no-op when nothing changed.
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt scripts/system-deps.sh 2>/dev/null | sha256sum | cut -c1-16)
PYTEST_ARGS ?=

.PHONY: setup run test lint format bench clean help

help:
	@echo "make run    - set up, then start the embedded stack (Ctrl-C stops it)"
	@echo "make test   - set up, then run the whole test suite"
	@echo "make lint   - ruff check, ruff format --check, mypy"
	@echo "make format - ruff format + autofix"
	@echo "make bench  - run the benchmarks in bench/"

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt scripts/system-deps.sh
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	bash scripts/system-deps.sh
	@rm -f $(VENV)/.installed-*
	@touch $@

run: setup
	$(PY) -m app.launch

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: setup
	@set -e; for b in bench/*.py; do \
		case $$b in */_*) continue;; esac; \
		echo "== $$b"; $(PY) $$b; \
	done

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
