# Two entry points for a fresh machine (see README):  make demo   |   make test
# torch is installed first and pinned, so pip never resolves an open-ended torch requirement
# (which would pull several GB of CUDA wheels). Override TORCH_SPEC for another build.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: setup demo test test-all lint clean

$(BIN)/fcpose: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $(BIN)/fcpose

setup: $(BIN)/fcpose

demo: setup
	$(BIN)/fcpose predict assets/sample.jpg --weights $(or $(WEIGHTS),assets/fcpose_synth_demo.pt) --out demo_out
	@echo "rendered skeletons and predictions.json are in demo_out/"

test: setup
	$(BIN)/python -m pytest -q

test-all: setup
	$(BIN)/python -m pytest -q --runslow

lint: setup
	$(BIN)/ruff check fcpose tests benchmarks

clean:
	rm -rf $(VENV) demo_out .pytest_cache
