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

test: lint
	scripts/install-test-services.sh
	$(BIN)/pytest -q

# mypy sees the card's folders as the `laterne` package through a tree of symlinks
lint: $(STAMP)
	$(BIN)/ruff check .
	rm -rf .typecheck && mkdir -p .typecheck/laterne
	for f in laterne/*; do ln -s ../../$$f .typecheck/laterne/; done
	for d in models controller drivers api simulations; do ln -s ../../$$d .typecheck/laterne/$$d; done
	$(BIN)/mypy -p laterne

bench: $(STAMP)
	$(BIN)/python bench/cycle_time.py

clean:
	rm -rf $(VENV) build *.egg-info
