# Set-up is part of every target: a fresh machine needs only `make test` or `make demo`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
SIZE   ?= small
DATA   ?= data

.PHONY: install debs-tiny debs corpus test lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

debs-tiny: $(STAMP)
	scripts/install-debs.sh $(PY) tiny speech
	scripts/install-debs.sh $(PY) tiny sounds

debs: $(STAMP)
	scripts/install-debs.sh $(PY) $(SIZE) speech
	scripts/install-debs.sh $(PY) $(SIZE) sounds

# the built-in corpus: make corpus [SIZE=tiny|small|large]
corpus: debs
	$(PY) -m wildmix.cli corpus build $(DATA)/corpus-$(SIZE) --size $(SIZE)

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks

test: lint debs-tiny
	$(PY) -m pytest

bench: $(STAMP) debs
	$(PY) benchmarks/bench_mixit.py
	$(PY) benchmarks/bench_data.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache src/*.egg-info
