# One entry point for developers and CI: `make test` builds the virtual
# environment from the pinned requirements and runs lint plus the whole suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install node test lint pytest bench bench-load carepath serve clean

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed

# The real FHIR server the fallback tests start (Medplum's FHIR router, from npm; needs Node.js 20).
node: tests/fhir_server/node_modules/.installed

tests/fhir_server/node_modules/.installed: tests/fhir_server/package.json tests/fhir_server/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		npm ci --prefix tests/fhir_server --no-audit --no-fund --loglevel=error && touch $@; \
	else \
		echo "npm not found: the FHIR fallback tests will be skipped (they run, and must pass, under CI)"; \
	fi

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

pytest: install node
	$(PY) -m pytest

test: lint pytest

# Start the service at http://127.0.0.1:$${PORT:-8080} (gunicorn, sync workers, SQLite by default).
# Demo mode by default: authentication off and the /demo bench on. With CDS_AUTH_REQUIRED=true
# the bench stays off unless CDS_DEMO_ENABLED=true is given too.
serve: install
	@auth=$${CDS_AUTH_REQUIRED:-false}; if [ "$$auth" = "false" ]; then demo=true; else demo=false; fi; \
	CDS_AUTH_REQUIRED=$$auth CDS_DEMO_ENABLED=$${CDS_DEMO_ENABLED:-$$demo} \
		$(VENV)/bin/gunicorn --config gunicorn.conf.py wsgi:app

bench: install
	$(PY) bench/bench_engine.py

# Load over loopback (docs/performance.md): gunicorn with gunicorn.conf.py, order-sign calls built
# from the scenarios, next to a plain Flask echo; wrk if installed. E.g. BENCH_ARGS="--duration 30".
bench-load: install
	$(PY) bench/bench_load.py $(BENCH_ARGS)

carepath: install
	$(PY) -m cds_server.tools.carepath_check $(filter-out %.schema.json,$(wildcard cds_server/carepaths/*.json))

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
