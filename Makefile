# Two entry points: `make run` (the whole DAG on the embedded default) and
# `make test`. Both set up .venv first: torch's CPU build, then honing.
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin

.PHONY: setup run results test test-vllm bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

run: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" dvc repro
	@echo "Results: data/ (artifacts), metrics/ (dvc metrics show), plots/ (dvc plots show)"

# The README's results table, rewritten from this checkout's metrics/report.json.
results: setup
	$(BIN)/honing results --update README.md

test: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(PY) -m pytest -m "not vllm" -q

test-vllm:
	bash .ci/vllm-tests

clean:
	rm -rf data/prepare data/base data/meta_corpus data/train_meta data/it* metrics plots runtime
