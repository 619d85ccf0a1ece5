# Set-up is part of every target: a fresh machine needs only `make test` or `make demo`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install test lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks

test: lint
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) benchmarks/bench_mixit.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache src/*.egg-info
