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

.PHONY: setup build test lint demo bench clean

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

## demo: the dataset, a pre-trained policy, the embedder and the judge (each cached),
## then distributed CFG distillation (`qd run`: learner, 2 actors, evaluator; resumes or
## skips when its run folder holds a finished run), tunes for a prompt, and quality and
## diversity of the base model with and without CFG and of the distilled student
STUDENT := runs/rl/default/student.safetensors
demo: setup
	$(QD) data prepare
	@$(MAKE) --no-print-directory runs/pretrain/last.safetensors runs/embedder.safetensors runs/judge.safetensors
	$(QD) run --config configs/default.toml
	$(QD) data export --split test -n 2 --out samples/corpus
	$(QD) sample "a lively irish reel in d major" -n 2 --cfg 3 --out samples/reel-base-cfg3
	$(QD) sample "a lively irish reel in d major" -n 2 --checkpoint $(STUDENT) --out samples/reel-distilled
	$(QD) eval --prompts 100
	$(QD) eval --prompts 100 --cfg 3
	$(QD) eval --prompts 100 --checkpoint $(STUDENT)

data/folk/dataset.json: | setup
	$(QD) data prepare

# Order-only: a re-prepared (identical) dataset does not retrain anything.
runs/pretrain/last.safetensors: | data/folk/dataset.json
	$(QD) pretrain

runs/embedder.safetensors: | data/folk/dataset.json
	$(QD) embedder train

runs/judge.safetensors: | data/folk/dataset.json
	$(QD) judge train

## bench: generation tokens/s with and without CFG, and qd against PyTorch eager; the
## service's trajectories/s with 1 and 2 actors and its weight delivery time
bench: setup | data/folk/dataset.json
	$(QD) bench generate
	@$(MAKE) --no-print-directory runs/pretrain/last.safetensors runs/embedder.safetensors
	$(QD) bench service --config configs/default.toml

clean:
	$(CARGO) clean
	rm -rf data/folk samples runs
