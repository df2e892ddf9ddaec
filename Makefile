# The two commands a newcomer needs: `make demo` and `make test`. Both install what they need.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test check lint services browser clean bench

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,s3,mysql,spark]'
	touch $(STAMP)

install: $(STAMP)

## The whole nightly job on embedded defaults (folder bucket, SQLite, DuckDB), in ./demo
demo: install
	rm -rf demo && mkdir -p demo
	cd demo && ../$(VENV)/bin/retail-etl demo

## Every test, against the real services (starts MariaDB when needed, installs Chromium)
test: install services browser
	$(PY) -m pytest -q

## Throughput and memory of every variant on the same files (GB=2 by default, up to 15)
GB ?= 2
bench: install
	$(VENV)/bin/retail-etl bench --gb $(GB)

services:
	bash scripts/ensure-services.sh

browser:
	bash scripts/ensure-chromium.sh

lint: install
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/ruff format --check src tests
	$(VENV)/bin/mypy src

check: lint test

clean:
	rm -rf demo .pytest_cache .mypy_cache .ruff_cache
