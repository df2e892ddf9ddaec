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

## Every test, against the real services (starts MariaDB when needed, installs Chromium).
## Tests run in WORKERS processes (pytest-xdist): most of them wait on subprocesses, MariaDB
## or the S3 server, so three workers on two cores finish sooner than one.
WORKERS ?= 3
test: install services browser
	$(PY) -m pytest -q -n $(WORKERS) --dist worksteal

## Throughput and memory of every variant on the same files, into this repository's
## BENCHMARKS.md, bench/ and docs/. PROFILE=default (40 customers, GB=2 by default, up to 15)
## or PROFILE=realistic (a million customers, 300 stores, with S3 + MariaDB; GB=1 by default)
PROFILE ?= default
GB ?= $(if $(filter realistic,$(PROFILE)),1,2)
BENCH_FILES_default := --workdir bench/data --results bench/results.json --section table
BENCH_FILES_realistic := --workdir bench/data-realistic --results bench/results-realistic.json \
	--section realistic
bench: install
	$(VENV)/bin/retail-etl bench --profile $(PROFILE) --gb $(GB) --markdown BENCHMARKS.md \
		$(BENCH_FILES_$(PROFILE))

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
