# Two commands set everything up on a fresh machine:
#   make train   -> creates .venv, installs polytask, trains on Meta-World MT10 (defaults)
#   make test    -> creates .venv, installs polytask with test extras, runs the linter and the test suite
#   make test-fast -> the fast tier of make test: the pure-contract tests, a minute or two
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ARGS ?=

.PHONY: train test test-fast lint bench install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch is installed first, pinned, so pip never resolves a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

train: install
	$(BIN)/python launch/train.py --suite metaworld $(ARGS)

test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q tests $(ARGS)

# The pure contracts only (no gpu, multiproc or integration marks; see pyproject.toml): a minute or two.
test-fast: install
	$(BIN)/python -m pytest -q tests -m "not integration and not multiproc and not gpu" $(ARGS)

lint: install
	$(BIN)/ruff check .

bench: install
	$(BIN)/python benchmarks/sac_vs_sb3.py throughput $(ARGS)

clean:
	rm -rf $(VENV) *.egg-info
