# One entry point for developers and CI: `make test` builds the virtual
# environment from the pinned requirements and runs lint plus the whole suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install test lint pytest bench carepath clean

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

pytest: install
	$(PY) -m pytest

test: lint pytest

bench: install
	$(PY) bench/bench_engine.py

carepath: install
	$(PY) -m cds_server.carepath_check cds_server/carepaths/*.json

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
