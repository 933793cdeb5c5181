# leadline: `make run` starts the daemon with the bundled model, `make test` runs every test.
# Both set up everything first on Debian/Ubuntu (system packages with apt, as root or through sudo,
# then a virtualenv in .venv). Other targets are for developers.

PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT     := jackd2 jack-midi-clock python3-venv gcc libc6-dev libjack-jackd2-dev  # libc6-dev: only a recommend of gcc
TORCH   ?= torch==2.13.0
JACK    ?= leadline
ARGS    ?=

.PHONY: run test setup setup-train system venv data train export eval bench clean

run: setup
	@if [ ! -e /dev/snd/seq ] && ! JACK_NO_START_SERVER=1 JACK_DEFAULT_SERVER=$${JACK_DEFAULT_SERVER:-default} jack_lsp >/dev/null 2>&1; then \
	  echo "No ALSA sequencer and no JACK server here: starting JACK with the dummy driver (server 'default')"; \
	  (jackd -R -d dummy -r 48000 -p 64 >/tmp/leadline-jackd.log 2>&1 &); sleep 1; \
	fi
	$(BIN)/leadline serve --config config.yaml $(ARGS)

test: setup-train
	$(BIN)/python -m pytest -q $(ARGS)

system: .make/system
.make/system: Makefile
	@missing=""; for p in $(APT); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $$missing; \
	fi
	@mkdir -p .make && touch $@

venv: $(BIN)/python
$(BIN)/python: | .make/system
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

setup: .make/setup
.make/setup: pyproject.toml $(BIN)/python
	$(BIN)/pip install -q -e .
	@touch $@

setup-train: .make/setup-train
.make/setup-train: pyproject.toml $(BIN)/python
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[train,test]"
	@touch $@ .make/setup

# --- developers: the shipped model, end to end ---------------------------------------------------------
data: setup-train
	$(BIN)/leadline data build --config config.yaml --out cache/all ../shared/data
train: setup-train
	$(BIN)/leadline train --config config.yaml --data cache/all --out runs/default $(ARGS)
export: setup-train
	$(BIN)/leadline export runs/default --out models/default --force
eval: setup-train
	$(BIN)/leadline eval --config config.yaml --model models/default --data cache/all --json models/default/eval.json
bench: setup-train
	$(BIN)/leadline bench $(ARGS)

clean:
	rm -rf .make $(VENV) .pytest_cache
