# qd's commands. `make demo` runs the main job on the embedded default task; `make test`
# runs the whole test suite. Both run the set-up first (seconds once it has run).

SHELL := /bin/bash
VENV := $(CURDIR)/.venv
# tch builds against the libtorch of the venv's torch wheel.
export VIRTUAL_ENV := $(VENV)
export PATH := $(VENV)/bin:$(PATH)
export LIBTORCH_USE_PYTORCH := 1
CARGO ?= cargo
QD := target/release/qd

.PHONY: setup build test lint demo clean

## setup: venv with torch, the folk corpus in data/raw/, and the release build of qd
setup:
	@scripts/setup.sh
	@$(MAKE) --no-print-directory build

build:
	$(CARGO) build --release --locked

## test: formatting, lints and every test (unit, property, end-to-end)
test: setup lint
	$(CARGO) test --release --locked --workspace --all-targets

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --locked --workspace --all-targets -- -D warnings

## demo: prepare the dataset and print its summary; write a few corpus tunes as ABC/MIDI
demo: setup
	$(QD) data prepare
	$(QD) data export --split test -n 2 --out samples/corpus

clean:
	$(CARGO) clean
	rm -rf data/folk samples
