# Two commands (see README): `make demo` sets up and runs the main job; `make test` sets up and runs the tests.
PY ?= python3
# where torch comes from: pip's default (PyPI's Linux wheel is the CUDA build; this project's machines resolve the
# CPU build from a local wheel store), or e.g. TORCH_INDEX=https://download.pytorch.org/whl/cpu for the CPU build
TORCH_INDEX ?=
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test lint

$(BIN)/lprnet: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(BIN)/lprnet

setup: $(BIN)/lprnet

demo: setup
	$(BIN)/lprnet recognize src/lprnet/samples --format text

test: setup
	$(BIN)/ruff check src tests scripts
	sh scripts/ci_system_deps.sh
	PY=$(PY) TORCH_INDEX=$(TORCH_INDEX) sh scripts/rknn_venv.sh
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q

lint: setup
	$(BIN)/ruff check src tests scripts
