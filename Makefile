# Two commands for a fresh machine: `make demo` (the pipeline on the embedded demo) and `make test`.
# Each creates the virtualenv on first use (torch 2.14.1 / torchvision 0.29.1 + pyproject.toml, at the exact
# versions of constraints.txt).
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: env demo test test-fast bench clean-venv

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

env: $(STAMP)

demo: env
	PATH="$(CURDIR)/$(BIN):$$PATH" dvc repro
	PATH="$(CURDIR)/$(BIN):$$PATH" dvc metrics show

test: env
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q

# the edit-test loop (docs/architecture.md): everything but the end-to-end `dvc repro`
test-fast: env
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q -k "not e2e"

bench: env
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/demo_repro.py

clean-venv:
	rm -rf $(VENV)
