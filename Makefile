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

.PHONY: setup build install test test-deploy lint demo paper-runs paper-dev paper curve teacher bench gpu-check soak mutants clean

## setup: venv with torch, the folk corpus in data/raw/, and the release build of qd
setup:
	@scripts/setup.sh
	@$(MAKE) --no-print-directory build

build:
	$(CARGO) build --release --locked

## install: `qd` on the PATH: a link in $(BINDIR) (default ~/.local/bin) to this build
## (the binary finds libtorch in the project's venv, so the checkout stays where it is),
## its manual pages in $(MANDIR) and bash's and zsh's completions under $(DATADIR)
BINDIR ?= $(HOME)/.local/bin
DATADIR ?= $(HOME)/.local/share
MANDIR ?= $(DATADIR)/man/man1
install: setup
	@mkdir -p $(BINDIR) $(DATADIR)/bash-completion/completions $(DATADIR)/zsh/site-functions
	@ln -sf $(CURDIR)/$(QD) $(BINDIR)/qd
	@echo "qd → $(BINDIR)/qd"
	@$(QD) man --out $(MANDIR)
	@$(QD) completions bash > $(DATADIR)/bash-completion/completions/qd
	@$(QD) completions zsh > $(DATADIR)/zsh/site-functions/_qd
	@echo "completions: $(DATADIR)/bash-completion/completions/qd, $(DATADIR)/zsh/site-functions/_qd (add the folder to fpath); man qd"
	@case ":$$PATH:" in *":$(BINDIR):"*) ;; \
	  *) echo "$(BINDIR) is not on your PATH: export PATH=\"$(BINDIR):\$$PATH\"";; esac

## test: formatting, lints and every test (unit, property, end-to-end), then the
## deployment's: Kubernetes manifests, Prometheus rules and dashboard, containers
test: setup lint
	$(CARGO) test --release --locked --workspace --all-targets
	@$(MAKE) --no-print-directory test-deploy

test-deploy: setup
	tests/deploy/k8s.sh
	tests/deploy/prometheus.sh
	tests/deploy/compose.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --locked --workspace --all-targets -- -D warnings

## demo: the dataset, a pre-trained policy, the embedder and the judge (each cached),
## then distributed CFG distillation (`qd run`: learner, 2 actors, evaluator; resumes or
## skips when its run folder holds a finished run); a small sweep (quality and diversity
## of the base model with and without CFG and with the plausibility constraint alone, of
## the distilled student, its kept earlier checkpoints and its LERP with the base model,
## on 100 held-out prompts; cached) with its plot; and tunes (.abc, .mid)
## for a few prompts from the base model with CFG, the student and the merged model
BASE := runs/pretrain/last.safetensors
STUDENT := runs/rl/default/student.safetensors
MERGED := runs/merged/default-base-0.5.safetensors
DEMO_PROMPTS := "a lively irish reel in d major" "a slow scottish air in g minor" "a german love song in 3/4"
demo: install
	$(QD) data prepare
	@$(MAKE) --no-print-directory $(BASE) runs/embedder.safetensors runs/judge.safetensors
	$(QD) run --config configs/default.toml
	$(QD) sweep --runs runs/rl/default --cfg 1,3 --temperatures 1 --plausibility 0.1 --lambdas 0,0.5,1 --out runs/demo-sweep
	$(QD) merge $(STUDENT) $(BASE) --lambda 0.5 --out $(MERGED)
	$(QD) data export --split test -n 2 --out samples/corpus > /dev/null
	@for p in $(DEMO_PROMPTS); do \
	  d=samples/$$(echo "$$p" | tr ' /' '-_'); echo "tunes for \"$$p\" → $$d/"; \
	  $(QD) sample "$$p" -n 2 --cfg 3 --cfg-scope content --out $$d/base-cfg3 > /dev/null && \
	  $(QD) sample "$$p" -n 2 --checkpoint $(STUDENT) --out $$d/beta0 > /dev/null && \
	  $(QD) sample "$$p" -n 2 --checkpoint $(MERGED) --out $$d/merged > /dev/null || exit 1; \
	done
	@echo
	@echo "To look at:"
	@echo "  plot     runs/demo-sweep/front.png (quality against diversity; .svg beside it, lerp.png too)"
	@echo "  tables   runs/demo-sweep/summary.md, runs/demo-sweep/sweep.csv"
	@echo "  tunes    .abc (text) and .mid (audio) files, two per model:"
	@for p in $(DEMO_PROMPTS); do d=samples/$$(echo "$$p" | tr ' /' '-_'); \
	  echo "           $$d/{base-cfg3,beta0,merged}/"; done
	@echo "           samples/corpus/ (held-out tunes of the corpus)"
	@echo "  models   base $(BASE) with CFG γ = 3; β = 0 student $(STUDENT); merged $(MERGED) (λ = 0.5 toward the base)"

## paper-runs: the β sweep's runs (configs/beta-{0,1,2,4}.toml), each β trained through
## the service with $(words $(SEEDS)) seeds from one base model; finished runs are skipped
## paper-dev: the development sweep on the validation split (runs/sweep-val/), where every
## knob is chosen: `qd sweep` over every run and its baselines on $(PAPER_PROMPTS)
## validation prompts
## paper: the final word, on the test split, once the knobs are chosen: the same sweep on
## $(PAPER_PROMPTS) test prompts (runs/sweep/), copied to docs/figures/; then the
## side-by-side test (`qd compare`) of the merged model LERP(β = 0, the largest β,
## λ = 0.5) of each seed against the teacher (runs/sweep/compare-seed-N.txt). Every step is cached but the
## comparison: trained models and finished runs are kept, and a sweep evaluates only the
## points whose inputs changed.
BETAS := 0 1 2 4
SEEDS := 0 1 2
PAPER_PROMPTS := 200
# The sweep's grids: the base model's CFG and temperature, the plausibility constraint
# alone, and the LERP weights (each β = 0 run merged toward the most diverse β's run of
# its seed and toward the base model).
PAPER_SWEEP := --prompts $(PAPER_PROMPTS) --cfg 1,1.5,2,3,4,5,7 --temperatures 0.5,0.6,0.7,0.85,1,1.15,1.3 \
	--plausibility 0.02,0.05,0.1,0.2 --lambdas 0,0.25,0.5,0.75,1
# The runs' teacher, as `qd compare` writes an operating point (the side-by-side test of
# the merged model against it).
TEACHER := cfg=3,scope=content
PAPER_RUNS := $(foreach b,$(BETAS),$(foreach s,$(SEEDS),runs/rl/beta-$(b)-seed-$(s)))
paper-runs: setup
	@$(MAKE) --no-print-directory data/folk/dataset.json
	@$(MAKE) --no-print-directory $(BASE) runs/embedder.safetensors runs/judge.safetensors
	@for s in $(SEEDS); do for b in $(BETAS); do \
	  run="$(QD) run --config configs/beta-$$b.toml --set paths.run_dir=runs/rl/beta-$$b-seed-$$s \
	    --set learner.seed=$$s --set actor.seed=$$((100 * s + 1))"; \
	  echo "$$run"; $$run || exit 1; done; done

paper-dev: paper-runs
	$(QD) sweep --runs $(PAPER_RUNS) $(PAPER_SWEEP) --split val --out runs/sweep-val
	@mkdir -p docs/figures/val
	cp runs/sweep-val/{front,lerp,training}.png runs/sweep-val/summary.md docs/figures/val/
	@echo "validation figures and tables: docs/figures/val/summary.md"

paper: paper-runs
	$(QD) sweep --runs $(PAPER_RUNS) $(PAPER_SWEEP) --split test --out runs/sweep
	@for s in $(SEEDS); do \
	  $(QD) merge runs/rl/beta-0-seed-$$s/student.safetensors runs/rl/beta-$(lastword $(BETAS))-seed-$$s/student.safetensors \
	    --lambda 0.5 --out runs/merged/paper-lerp-seed-$$s.safetensors || exit 1; \
	  $(QD) compare runs/merged/paper-lerp-seed-$$s.safetensors $(BASE)@$(TEACHER) --prompts $(PAPER_PROMPTS) \
	    --no-progress | tee runs/sweep/compare-seed-$$s.txt || exit 1; \
	done
	@mkdir -p docs/figures
	cp runs/sweep/{front,lerp,training}.{png,svg} runs/sweep/sweep.csv runs/sweep/summary.md \
	  runs/sweep/compare-seed-*.txt docs/figures/
	@echo "figures and tables: docs/figures/summary.md"

## curve: pre-training's learning curve with and without the metrical position, and with
## REMI position tokens instead: validation bar validity and quality at each of CURVE_STEPS
## of one CURVE_TOTAL-step schedule (`qd eval --split val`), drawn with `qd curve` into
## docs/figures/pretrain-curve.{png,svg,csv}. Each arm resumes where it stopped, and
## evaluations are kept: re-runs redo nothing. About 75 minutes on 2 cores.
CURVE_TOTAL := 4000
CURVE_STEPS := 500 1000 2000 3000 4000
CURVE_PROMPTS := 100
curve: install | data/folk/dataset.json
	@$(MAKE) --no-print-directory runs/embedder.safetensors runs/judge.safetensors
	@for arm in metrical plain remi; do d=runs/curve/$$arm; \
	  case $$arm in plain) train=--no-metrical eval=;; remi) train=--remi eval=--remi;; \
	    *) train= eval=;; esac; \
	  for u in $(CURVE_STEPS); do test -f $$d/eval-$$u.json && continue; \
	    $(QD) pretrain --steps $(CURVE_TOTAL) --until $$u --out $$d $$train --no-progress || exit 1; \
	    $(QD) eval --checkpoint $$d/last.safetensors --split val --prompts $(CURVE_PROMPTS) $$eval \
	      --json --no-progress > $$d/eval-$$u.json.tmp || exit 1; \
	    mv $$d/eval-$$u.json.tmp $$d/eval-$$u.json; \
	  done; done
	$(QD) curve runs/curve/metrical runs/curve/plain runs/curve/remi --out docs/figures/pretrain-curve \
	  --title "validation bar validity and quality against pre-training steps ($(CURVE_PROMPTS) prompts × 4; dashed: 95% intervals)"

## teacher: claim 1 on the validation split, which the default teacher is chosen from
## (`qd compare`, 200 prompts × 2 samples a side, paired, 95% intervals): standard CFG,
## content-scoped CFG, the plausibility constraint alone and guidance with the constraint,
## each against unguided sampling of the base model, and guidance with the constraint
## against the constraint alone; runs/teacher/<name>.txt. About 5 minutes.
TEACHER_PROMPTS := 200
TEACHER_ARMS := cfg-all:cfg=3,scope=all:none cfg-content:cfg=3,scope=content:none \
	plausibility:cfg=1,plausibility=0.1:none \
	cfg-all-plausibility:cfg=3,scope=all,plausibility=0.1:none \
	cfg-content-plausibility:cfg=3,scope=content,plausibility=0.1:none \
	guidance-over-plausibility:cfg=3,scope=content,plausibility=0.1:cfg=1,plausibility=0.1 \
	all-guidance-over-plausibility:cfg=3,scope=all,plausibility=0.1:cfg=1,plausibility=0.1
teacher: install | data/folk/dataset.json
	@$(MAKE) --no-print-directory $(BASE) runs/embedder.safetensors runs/judge.safetensors
	@mkdir -p runs/teacher
	@for arm in $(TEACHER_ARMS); do IFS=: read -r name a b <<< "$$arm"; \
	  side() { [ "$$1" = none ] && echo $(BASE) || echo "$(BASE)@$$1"; }; \
	  echo "teacher: $$name"; \
	  $(QD) compare "$$(side $$a)" "$$(side $$b)" --split val --prompts $(TEACHER_PROMPTS) \
	    --no-progress | tee runs/teacher/$$name.txt || exit 1; \
	done

data/folk/dataset.json: | setup
	$(QD) data prepare

# Order-only: a re-prepared (identical) dataset does not retrain anything.
runs/pretrain/last.safetensors: | data/folk/dataset.json
	$(QD) pretrain

runs/embedder.safetensors: | data/folk/dataset.json
	$(QD) embedder train

runs/judge.safetensors: | data/folk/dataset.json
	$(QD) judge train

## bench: the benchmark suite, each line qd against its reference in one run: the learner
## step and the pre-training step against PyTorch eager (and their share of this machine's
## matrix-product rate), generation with and without CFG against PyTorch eager, weight
## delivery to 2 and 8 subscribers against a raw loopback copy, the service with 1, 2 and
## 4 actors; JSON reports and suite.json in runs/bench/, the table printed
bench: setup | data/folk/dataset.json
	@$(MAKE) --no-print-directory $(BASE) runs/embedder.safetensors
	@mkdir -p runs/bench
	$(QD) bench generate --checkpoint $(BASE) --json > runs/bench/generate.json
	$(QD) bench pretrain --json > runs/bench/pretrain.json
	$(QD) bench learner --config configs/default.toml --set learner.beta=2 --json > runs/bench/learner.json
	$(QD) bench service --config configs/default.toml --json > runs/bench/service.json
	$(VENV)/bin/python scripts/bench_summary.py runs/bench

## gpu-check: on a machine with an NVIDIA GPU (minutes): the CUDA build, the pre-training
## step on cuda against PyTorch on cuda (same loss and gradient), generation on cuda, and a
## whole `qd run` on cuda; reports in runs/gpu-check/. Without a GPU it says so and fails.
gpu-check: setup
	scripts/gpu-check.sh

## soak: the fault campaign (docs/reliability.md): 2,000 idle weight streams and 500
## silent trajectory streams, the heaviest messages on 128 streams and four of 63 MiB,
## 1,000 malformed messages, 10 actor and 20 learner SIGKILLs against a learner and two
## actors on loopback (minutes; every client shares one address, so the per-address
## limit is lifted to the global one). `make soak SOAK_PRESET=base SOAK_CONTEXT=1100`
## measures with the base model and its full context (the largest messages).
SOAK_PRESET ?= tiny
SOAK_CONTEXT ?= 64
soak: setup | data/folk/dataset.json
	$(QD) pretrain --preset $(SOAK_PRESET) --steps 30 --context $(SOAK_CONTEXT) --batch-size 8 --out runs/soak/$(SOAK_PRESET)-$(SOAK_CONTEXT)/pretrain --no-progress
	@test -f runs/soak/embedder.safetensors || $(QD) embedder train --steps 5 --out runs/soak/embedder.safetensors --no-progress
	$(QD) bench faults --config configs/default.toml --set paths.base=runs/soak/$(SOAK_PRESET)-$(SOAK_CONTEXT)/pretrain/last.safetensors \
	  --set paths.embedder=runs/soak/embedder.safetensors --set learner.batch_prompts=4 \
	  --set actor.batch_prompts=4 --set actor.max_new_tokens=64 --set learner.threads=1 --set actor.threads=1 \
	  --set limits.max_connections_per_address=512

## mutants: the mutation score of the modules that hold the method and its safeguards
## (the loss, CFG guidance and sampling, merging, checkpoints, trajectory validation, the
## queue, the trainer and the service, the optimizer and the training loop, the reward,
## the rollout, the weight broadcast, the statistics, comparisons and fronts), each
## mutant tested by its own crate's tests; cargo-mutants is
## installed by this target when missing. Hours on 2 cores: not part of `make test`.
## Results in runs/mutants/mutants.out/ (caught.txt, missed.txt, …); docs/testing.md.
## `make mutants MUTATED=model/src/merge.rs` runs one module.
MUTATED ?= learner/src/loss.rs learner/src/validate.rs learner/src/broadcast.rs \
	learner/src/queue.rs learner/src/seen.rs learner/src/intake.rs learner/src/trainer.rs \
	learner/src/server.rs model/src/optim.rs model/src/train.rs model/src/task.rs \
	model/src/sampling.rs model/src/merge.rs model/src/checkpoint.rs actor/src/broadcast.rs \
	actor/src/rollout.rs eval/src/stats.rs eval/src/compare.rs eval/src/front.rs
mutants: setup
	@command -v cargo-mutants >/dev/null || $(CARGO) install cargo-mutants --locked
	mkdir -p runs
	$(CARGO) mutants --workspace $(MUTATED:%=-f %) --test-workspace=false --profile release \
	  --copy-target=true --timeout 300 -o runs/mutants $(MUTANTS_ARGS)

clean:
	$(CARGO) clean
	rm -rf data/folk samples runs
