# Every target bootstraps .venv from pyproject.toml; a machine needs only Python 3.11 and pip.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: serve test lint bench derive clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[mongo,test,bench]'
	touch $(STAMP)

serve: $(STAMP)
	$(BIN)/fhirserver serve

lint: $(STAMP)
	$(BIN)/ruff check fhirserver tests bench scripts
	$(BIN)/ruff format --check fhirserver tests bench scripts
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint
	$(BIN)/pytest -q -n 2

bench: $(STAMP)
	$(BIN)/python -m bench

# Re-derive the tables in fhirserver/resources/derived/ from ../shared/data/r4/definitions
# (commit the result; tests/scripts checks it is current).
derive: $(STAMP)
	for script in scripts/derive_*.py; do $(BIN)/python $$script || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
