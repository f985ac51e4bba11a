# genre-edge developer entry points. Two matter on a fresh machine:
#   make run    streams the bundled clip through the bundled model (creates .venv)
#   make test   installs everything (system packages included) and runs the tests
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
SYSTEM_PACKAGES := mosquitto libportaudio2 libsndfile1 python3-venv chromium shellcheck \
		   pulseaudio pulseaudio-utils libasound2-plugins mmdebstrap \
		   qemu-user-static binfmt-support arch-test

.PHONY: run test test-aarch64 lint sysdeps device-env dev-env ha-env default-model cross-source example-config bench clean

# A venv that failed to be created (e.g. python3-venv missing) is removed, so the next
# make starts over instead of finding a python without pip.
$(PY):
	$(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); exit 1; }
	$(PY) -m pip install --quiet --upgrade pip

# Device dependencies only (+ soundfile for the Opus demo clip): what a Pi installs.
$(VENV)/.device: $(PY) pyproject.toml
	$(PY) -m pip install --quiet -e '.[files]'
	touch $@

# Everything: training (TensorFlow), test and lint tools, and the distillation teacher's
# checkpoint (musicnn; --no-deps: its metadata pins a 2019 numpy, only its files are used).
$(VENV)/.dev: $(PY) pyproject.toml
	$(PY) -m pip install --quiet -e '.[files,train,dev]'
	$(PY) -m pip install --quiet --no-deps musicnn==0.1.0
	touch $@ $(VENV)/.device

device-env: $(VENV)/.device
dev-env: $(VENV)/.dev

sysdeps:
	@missing=""; for p in $(SYSTEM_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

run: $(VENV)/.device
	$(VENV)/bin/genre-edge listen --input firmware_py/assets/demo-rock.opus --realtime

test: sysdeps $(VENV)/.dev
	$(PY) -m ruff check firmware_py training converter tests
	$(PY) -m pytest

# The device package on the Pi's architecture: a Debian 12 arm64 root under qemu-user emulation
# (cached in $$GENRE_EDGE_ARM64_ROOT, default ~/.cache/genre-edge-arm64/), the package from its
# wheel, the device-side tests there, classify there vs here, install.sh --destdir there.
# AARCH64_TESTS="tests/..." narrows the tests (CI runs a bounded subset: see README, Tests).
test-aarch64: sysdeps $(VENV)/.dev
	PYTHON=$(PY) tools/test-aarch64.sh

# Home Assistant for tests/test_homeassistant.py: its own virtualenv in a Debian 13 root (its
# releases that know discovery's default_entity_id need Python >= 3.12), built once (~5 min)
# and cached in $$GENRE_EDGE_HA_ROOT (default ~/.cache/genre-edge-ha/). make test builds it
# too when it is missing; CI builds it first, to time it apart.
ha-env: sysdeps
	$(PYTHON) -m tests.homeassistant build

lint: $(VENV)/.dev
	$(PY) -m ruff check firmware_py training converter tests

# The bundled default model, reproduced from the real-music set (eleven genres; seeded; one
# TensorFlow thread so that the float sums, hence the weights, do not depend on the core count;
# two threads were measured 1.45x faster per epoch on 2 cores, but two such runs on the same
# machine already differ from the first epoch, so the recipe stays at one):
# PCEN front-end, the edge-l preset, four simulated rooms per training track, distilled from
# the musicnn teacher; int8 conversion checked clean and in held-out rooms; smoothing retuned
# on validation (clean and in-room) and written into the bundle; the model card last.
# --validate-from 13: epochs 1-12 are not validated (early stopping never comes before half of
# the 24, and the weights are the same with or without those validations; ~12 x 17 s less).
# Measured on 2 cores with other jobs running: train 53 min (the teacher's embeddings, ~12 min,
# and the room renderings, 10-25 min, are cached after the first run), convert 7-11 min, tune
# the smoothing 14 min: 75-100 min from a cold cache, ~70 min warm.
# `make cross-source` (after it) adds the cross-source section to the card (2 more trainings).
DATA ?= $(or $(GENRE_EDGE_DATA),../shared/data)
DEFAULT_MODEL := firmware_py/models/default
DEFAULT_RECIPE := --compression pcen --arch edge-l --rooms 4 --teacher musicnn-msd --distill 0.8 \
	--threads 1 --seed 0
default-model: $(VENV)/.dev
	$(VENV)/bin/genre-edge train --data $(DATA)/music $(DEFAULT_RECIPE) --validate-from 13 \
	  --out runs/default --overwrite
	rm -rf $(DEFAULT_MODEL).new
	$(VENV)/bin/genre-edge convert runs/default --out $(DEFAULT_MODEL).new --name genre-edge-default --seed 0 \
	  --representative 1600
	$(PY) -m converter.tune_smoothing $(DEFAULT_MODEL).new --data $(DATA)/music --write
	$(PY) -m converter.model_card runs/default $(DEFAULT_MODEL).new --command "make default-model"
	rm -rf $(DEFAULT_MODEL) && mv $(DEFAULT_MODEL).new $(DEFAULT_MODEL)

# Cross-source accuracy of the default recipe (12 epochs each; ~1 h on 2 cores): trains without
# GTZAN's, then without Emotify's classical/pop/rock and tests on them; the card then shows it.
cross-source: $(VENV)/.dev
	$(PY) -m training.cross_source --data $(DATA)/music --out runs/xsrc --reference runs/default \
	  -- $(DEFAULT_RECIPE) --epochs 12
	cp runs/xsrc/cross_source.json runs/default/cross_source.json
	$(PY) -m converter.model_card runs/default $(DEFAULT_MODEL) --command "make default-model"

# deploy/config.example.toml is generated from the settings' declarations (a test compares).
example-config: $(VENV)/.device
	$(PY) -m firmware_py.config.example > deploy/config.example.toml

bench: $(VENV)/.dev
	$(VENV)/bin/genre-edge bench frontend --json bench-frontend.json

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
