# Two entry points, each working on a fresh machine with only python3 and make:
#   make demo   - create .venv, install, run the quick comparison on the default env (results/demo/)
#   make test   - create .venv, install, run ruff and the test suite with coverage
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
CORE := prefrl/types.py,prefrl/envs.py,prefrl/segments.py,prefrl/raters/*

.PHONY: install demo test test-slow lint format bench docs check-wheel clean

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

# the documentation site (mkdocs.yml, docs/) into site/; --strict turns every warning (a broken link, a
# missing snippet, a docstring mkdocstrings cannot parse) into a failure
DOCS_STAMP := $(VENV)/.docs-stamp

$(DOCS_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[docs]'
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

# packaging: build sdist + wheel, install the wheel into a fresh venv, run prefrl from another folder
check-wheel: install
	bash .ci/check_wheel

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .coverage coverage.xml
