# Two commands for a new user: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint bench sample-data clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	bash scripts/demo.sh

test: $(STAMP)
	$(BIN)/python -m pytest -q --basetemp=.pytest_tmp --doctest-modules \
		tests datatools/geometry.py datatools/edges.py datatools/downsample.py

lint: $(STAMP)
	$(BIN)/ruff check datatools tests scripts
	$(BIN)/ruff format --check datatools tests scripts
	$(BIN)/mypy

bench: $(STAMP)
	set -e; for script in scripts/bench_*.py; do $(BIN)/python $$script; done

sample-data: $(STAMP)
	$(BIN)/python scripts/make_sample_data.py sample_data

clean:
	rm -rf demo_out bench_out .pytest_cache .pytest_tmp .mypy_cache .ruff_cache
