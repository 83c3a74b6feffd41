# Two commands on a fresh machine: `make demo` and `make test`. Everything else is set up here.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench setup clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/laterne demo site-configs/demo.yaml

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy laterne models controller drivers api simulations
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy laterne models controller drivers api simulations

bench: $(STAMP)
	$(BIN)/python bench/cycle_time.py

clean:
	rm -rf $(VENV) build *.egg-info
