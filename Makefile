# jobgate: `make run` and `make test` are all a fresh machine needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install run test lint typecheck openapi bench check clean

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

## Benchmarks (ratios against baselines measured in the same run; see bench/README.md).
bench: install
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python bench/accept_throughput.py
	$(BIN)/python bench/outbox_coalescing.py
	$(BIN)/python bench/e2e_throughput.py
	$(BIN)/python bench/admission_overload.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
