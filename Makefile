# jobgate: `make run` and `make test` are all a fresh machine needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install run test lint typecheck openapi bench bench-quick bench-deps check clean prestashop-module

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## Gateway and consumer on SQLite + the local engine (`jobgate dev`).
run: install
	$(BIN)/jobgate dev

## The whole suite (SQLite by default; PostgreSQL when JOBGATE_DATABASE_URL points at one).
test: install
	$(BIN)/pytest -q

lint: install
	$(BIN)/ruff check app tests bench alembic

typecheck: install
	$(BIN)/mypy --strict app

check: lint typecheck test

openapi: install
	$(BIN)/jobgate openapi > openapi.yaml
	@if [ -d clients/typescript/node_modules ]; then cd clients/typescript && npm run --silent generate; \
		else echo "clients/typescript/node_modules missing: run npm ci there, then npm run generate"; fi

## The PrestaShop module, ready for "Upload a module": dist/jobgate.zip.
prestashop-module:
	$(PYTHON) integrations/prestashop/build_zip.py dist/jobgate.zip

## Benchmarks (ratios against baselines measured in the same run; see bench/README.md).
## Both write bench/results/REPORT.md and its PNG plots and need Redis on 127.0.0.1:6379;
## `make bench` also PostgreSQL at postgresql://postgres@127.0.0.1:5432/test (skipped if down).
BENCH_STAMP := $(VENV)/.bench-stamp

$(BENCH_STAMP): pyproject.toml $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

bench-deps: $(BENCH_STAMP)
	@command -v wrk >/dev/null || apt-get install -y --no-install-recommends wrk \
		|| echo "wrk could not be installed: falling back to bench/httpx_load.py"

bench: bench-deps
	$(BIN)/python -m bench.suite

bench-quick: bench-deps
	$(BIN)/python -m bench.suite --quick

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
