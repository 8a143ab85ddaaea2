# Every target that runs code depends on the virtual environment, so `make demo` or `make test`
# on a fresh clone bootstraps everything by itself.
PYTHON ?= python3
VENV   := .venv
# Touched after a complete install; the install is redone when pyproject.toml changes.
STAMP  := $(VENV)/.installed
BIN    := $(VENV)/bin

.PHONY: help .venv test demo bench clean

help:
	@echo "make demo    set up .venv if needed, check BPTT gradients, train a char LM on Python's stdlib, generate code"
	@echo "make test    set up .venv if needed, run the test suite"
	@echo "make bench   run benchmarks/throughput.py"
	@echo "make clean   remove .venv, caches and build output"

.venv: $(STAMP)

# torch==2.13.0 goes in first, explicitly: pyproject's range is satisfied by it, so the
# editable install keeps it instead of pulling a multi-GB CUDA build of a newer torch.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install torch==2.13.0
	$(BIN)/pip install -e ".[dev]"
	touch $@

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The demo: say what this machine is and what `auto` picks on it, check BPTT gradients, then train a small char
# LSTM on the Python standard library's own source (the embedded default corpus, about 2.5 minutes on 2 cores,
# in bf16 where the CPU multiplies it natively, else fp32) and let it write Python.
demo: $(STAMP)
	$(BIN)/recurrent info
	$(BIN)/python benchmarks/gradcheck_demo.py
	$(BIN)/recurrent train lm --out runs/stdlib --overwrite --max-time 150 --hidden-size 256
	$(BIN)/recurrent generate runs/stdlib --prime "def " --length 600 --temperature 0.7 --seed 1

bench: $(STAMP)
	$(BIN)/python benchmarks/throughput.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
	find recurrent tests benchmarks -name __pycache__ -prune -exec rm -rf {} +
