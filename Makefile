# The two commands of the README: `make run` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch for the embedded default; override for CUDA, e.g. TORCH_SPEC=torch.
TORCH_SPEC ?= torch==2.13.0
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test lint venv clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[worker,dev]"
	touch $@

venv: $(BIN)/.installed

## run: the embedded default — migrate, create the example study, serve on http://127.0.0.1:8000
run: venv
	$(BIN)/vidarena demo --host $(HOST) --port $(PORT)

## test: ruff, mypy (app/ and workers/, [tool.mypy] in pyproject.toml), the import stack
## (lint-imports, [tool.importlinter]), then the whole test suite (SQLite and PostgreSQL; Redis,
## S3 and Chromium where needed)
test: venv
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python -m pytest

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check app workers tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache .mypy_cache .import_linter_cache
