# Two entry points on a fresh machine: `make book` (the main job) and `make test`.
# Both create .venv on first use; TORCH_SPEC picks the torch build (the default is
# the CPU wheel; on a GPU box use e.g. `make TORCH_SPEC='torch==2.13.0' ...` from a CUDA index).
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: setup test unit lint clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, pinned: a bare `torch` requirement would pull a CUDA build.
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

unit: setup
	$(BIN)/python -m pytest tests --ignore=tests/book

lint: setup
	$(BIN)/ruff check saelib tests
	$(BIN)/ruff format --check saelib tests

test: lint unit

clean:
	rm -rf $(VENV) _build
