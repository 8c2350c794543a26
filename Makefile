# One-command entry points. Every target depends on `install`, so a fresh clone needs
# nothing but python3 (3.10+) with venv: `make test` and `make book` set everything up.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test lint format clean help

help:
	@echo "make install   create .venv and install the pinned requirements"
	@echo "make test      lint + the test suite (CPU, offline)"
	@echo "make lint      ruff check + ruff format --check"
	@echo "make format    ruff format + ruff check --fix"

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q -e . --no-deps
	touch $@

install: $(STAMP)

lint: install
	$(VENV)/bin/ruff check vptlib tests
	$(VENV)/bin/ruff format --check vptlib tests

format: install
	$(VENV)/bin/ruff format vptlib tests
	$(VENV)/bin/ruff check --fix vptlib tests

test: install lint
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf _build runs .pytest_cache
