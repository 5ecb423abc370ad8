# The developer workflow. README's two commands are `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install services run test lint format bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)  ## Python environment with newswatch and the dev tools

services:  ## redis-server and PostgreSQL binaries for the tests (apt-get, when missing)
	bash scripts/ensure-services.sh

run: install  ## the whole system on the embedded default (SQLite + file broker)
	$(BIN)/newswatch run

test: install services  ## the whole test suite, against real Redis, Celery, HTTP, SQLite, PostgreSQL
	$(BIN)/pytest

lint: install  ## ruff and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: install  ## every benchmark; reads ../shared/corpora (override with CORPORA=...)
	$(BIN)/pip install --quiet -e ".[dev,bench]"
	$(BIN)/python benchmarks/run_all.py $(if $(CORPORA),--corpora $(CORPORA))

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
