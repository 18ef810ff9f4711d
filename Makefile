# Two entry points, each working on a fresh machine with only python3 and make:
#   make demo   - create .venv, install, run the quick comparison on the default env (results/demo/)
#   make test   - create .venv, install, run ruff and the test suite with coverage
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
CORE := prefrl/types.py,prefrl/envs.py,prefrl/segments.py,prefrl/raters/*

.PHONY: install demo test test-slow lint format bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,ray]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	OMP_NUM_THREADS=1 $(BIN)/prefrl demo --out results/demo

lint: install
	$(BIN)/ruff check prefrl tests benchmarks

test: lint
	OMP_NUM_THREADS=1 $(BIN)/pytest -q --cov=prefrl --cov-report=term --cov-report=xml -p no:cacheprovider
	# core modules (types, envs, segments, raters) must keep >= 85% line coverage
	$(BIN)/coverage report --include='$(CORE)' --fail-under=85

test-slow: install
	OMP_NUM_THREADS=1 $(BIN)/pytest -q -p no:cacheprovider -m slow

format: install
	$(BIN)/ruff format prefrl tests benchmarks
	$(BIN)/ruff check --fix prefrl tests benchmarks

bench: install
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/bench_raters.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .coverage coverage.xml
