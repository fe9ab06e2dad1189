# Every target bootstraps .venv from pyproject.toml; a machine needs only Python 3.11 and pip.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: serve test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[mongo,test,bench]'
	touch $(STAMP)

serve: $(STAMP)
	$(BIN)/fhirserver serve

lint: $(STAMP)
	$(BIN)/ruff check fhirserver tests bench
	$(BIN)/ruff format --check fhirserver tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint
	$(BIN)/pytest -q

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
