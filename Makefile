# Set-up is part of every target: a fresh machine needs only `make test` or `make demo`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
SIZE   ?= small
DATA   ?= data

RUN    ?= runs/demo
DEMO_STEPS   ?= 3000
DEMO_MINUTES ?= 14

.PHONY: install debs-tiny debs corpus test lint bench bench-quality bench-curve demo clean

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

# the main job end to end: corpus -> MixIT training (no clean speech) -> enhanced test split
# -> evaluation against the noisy input and spectral gating (table + report.html).
# Rerunning resumes an interrupted training run.
demo: $(STAMP)
	scripts/install-debs.sh $(PY) small speech
	test -f $(DATA)/corpus-small/manifest.jsonl || \
		$(PY) -m wildmix.cli corpus build $(DATA)/corpus-small --size small
	$(PY) -m wildmix.cli train --data $(DATA)/corpus-small --task enhance --model stft \
		--out $(RUN) --max-steps $(DEMO_STEPS) --max-minutes $(DEMO_MINUTES)
	$(PY) -m wildmix.cli enhance $(RUN) $(DATA)/corpus-small/test/noisy --out $(RUN)/enhanced-test
	$(PY) -m wildmix.cli evaluate --data $(DATA)/corpus-small/test --model $(RUN) \
		--out $(RUN)/report
	@echo "enhanced test files: $(RUN)/enhanced-test/  report: $(RUN)/report/report.html" \
		" (model: $(RUN)/best.pt, log: $(RUN)/log.jsonl)"

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks

test: lint debs-tiny
	$(PY) -m pytest

bench: $(STAMP) debs
	$(PY) benchmarks/bench_mixit.py
	$(PY) benchmarks/bench_data.py
	$(PY) benchmarks/bench_enhance.py

# slow (about 45 minutes on 2 cores): MixIT, supervised, RemixIT (from MixIT and across a
# domain shift) on the same budget, evaluated with the baselines on small's test split
bench-quality: $(STAMP) debs
	scripts/install-debs.sh $(PY) shift speech
	scripts/apt-install.sh "the report's screenshot" \
		$$(command -v chromium >/dev/null || echo chromium) || true
	$(PY) benchmarks/bench_quality.py --data $(DATA)/corpus-small --shift-data $(DATA)/corpus-shift

# slow: MixIT for QUALITY_MINUTES on the small corpus, valid SI-SNRi against time (PNG)
QUALITY_MINUTES ?= 60
bench-curve: $(STAMP)
	scripts/install-debs.sh $(PY) small speech
	$(PY) benchmarks/bench_quality.py --curve $(QUALITY_MINUTES) --data $(DATA)/corpus-small

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache src/*.egg-info
