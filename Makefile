# mnist-bp: every target creates .venv itself on a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CONFIG ?=
DATA_DIR ?=
ARGS   ?=

.PHONY: install train test bench lint clean

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,fast,plot,serve,tune,export,tracking]'
	touch $@

install: $(VENV)/.installed

# Trains configs/default.yaml (or CONFIG=...). Honours $$MNIST_BP_DATA_DIR; DATA_DIR=... overrides.
train: install
	$(BIN)/mnist-bp train $(CONFIG) $(if $(DATA_DIR),--data-dir $(DATA_DIR)) $(ARGS)

test: install
	$(BIN)/python -m pytest -q $(ARGS)

# Needs Fashion-MNIST in the data dir (see README); installs the optional references first.
bench: install
	$(BIN)/python -m pip install -q 'torch==2.13.0' 'scikit-learn>=1.3' || echo "reference libraries unavailable: benchmarking mnist-bp alone"
	$(BIN)/python benchmarks/bench.py $(if $(DATA_DIR),--data-dir $(DATA_DIR)) $(ARGS)

lint: install
	$(BIN)/python -m pip install -q ruff
	$(BIN)/ruff check mnist_bp tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache
