# Flywheel: `make run` starts the embedded stack, `make test` proves it. Both set up first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
LOCK := requirements.lock
# The install is keyed on what decides it, so `make setup` is a no-op when nothing changed.
STAMP := $(VENV)/.installed-$(shell cat $(LOCK) pyproject.toml scripts/system-deps.sh 2>/dev/null | sha256sum | cut -c1-16)
PYTEST_ARGS ?=
# uv hard-links files from its cache by default; llama-index's file guard refuses a
# multiply-linked file (its bundled NLTK stop words), so the venv gets real copies.
export UV_LINK_MODE := copy
# Where torch's CPU build comes from. This workplace keeps the wheel in /opt/wheels;
# elsewhere PyTorch's CPU index serves it (PyPI's own torch wheel is the CUDA build).
TORCH_SOURCE ?= $(if $(wildcard /opt/wheels/torch-*),--find-links /opt/wheels,--extra-index-url https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match)
RESOLVE := --extra dev -c requirements/constraints.txt --override requirements/overrides.txt \
	$(TORCH_SOURCE) --python-version 3.11 --python-platform x86_64-manylinux_2_28

.PHONY: setup run test test-latest lock lock-deps lint format bench clean help

help:
	@echo "make run         - set up, then start the embedded stack (Ctrl-C stops it)"
	@echo "make test        - set up from the lock, then run the whole test suite"
	@echo "make lint        - ruff check, ruff format --check, mypy"
	@echo "make lock        - re-resolve requirements.lock on purpose (newest allowed versions)"
	@echo "make lock-deps   - after editing dependencies: resolve them, keep every other pin"
	@echo "make test-latest - newest upstream versions in .venv-latest, then the suite"
	@echo "make bench       - run the benchmarks in bench/"

setup: $(STAMP)

# Exactly the locked versions: uv syncs the venv to the lock (removing strays), then
# the project itself goes in editable without resolving anything.
$(STAMP): $(LOCK) pyproject.toml scripts/system-deps.sh
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@test -x $(VENV)/bin/uv || $(PY) -m pip install --quiet "$$(grep -m1 '^uv==' $(LOCK))"
	$(VENV)/bin/uv pip sync --python $(PY) $(TORCH_SOURCE) $(LOCK)
	$(VENV)/bin/uv pip install --python $(PY) --no-deps -e .
	bash scripts/system-deps.sh
	@rm -f $(VENV)/.installed-*
	@touch $@

# `make lock` refreshes every pin to the newest allowed release; `make lock-deps`, after a
# dependency was added or changed in pyproject.toml, resolves it and keeps the other pins.
lock: LOCK_MODE := --upgrade
lock lock-deps:
	@test -x $(VENV)/bin/uv || { $(PYTHON) -m venv $(VENV) && $(PY) -m pip install --quiet uv; }
	$(VENV)/bin/uv pip compile pyproject.toml $(RESOLVE) -c requirements/holds.txt \
		$(LOCK_MODE) --quiet -o $(LOCK)
	@echo "$(LOCK): $$(grep -c '^[a-z0-9]' $(LOCK)) pinned packages; run 'make test' to prove it"

# Not part of CI: the newest releases (holds ignored) in a venv of their own, so a
# break upstream shows here before anyone locks it in.
test-latest:
	@test -x $(VENV)/bin/uv || $(MAKE) setup
	rm -rf .venv-latest && $(PYTHON) -m venv .venv-latest
	$(VENV)/bin/uv pip compile pyproject.toml $(RESOLVE) --upgrade --quiet -o .venv-latest/latest.lock
	$(VENV)/bin/uv pip sync --python .venv-latest/bin/python $(TORCH_SOURCE) .venv-latest/latest.lock
	$(VENV)/bin/uv pip install --python .venv-latest/bin/python --no-deps -e .
	@diff <(grep '^[a-z0-9]' $(LOCK)) <(grep '^[a-z0-9]' .venv-latest/latest.lock) || true
	.venv-latest/bin/python -m pytest $(PYTEST_ARGS)

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
	rm -rf $(VENV) .venv-latest .mypy_cache .ruff_cache .pytest_cache
