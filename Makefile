# `make demo` and `make test` each set up .venv on first use (pinned, CPU-only torch).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.lipkit-installed

.PHONY: demo test install clean

install: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml constraints.txt | $(PY)
	$(PY) -m pip install --quiet -c constraints.txt -e ".[test]"
	@# Guard: only the CPU torch 2.13.0 build, and no CUDA wheels pulled in by anything.
	@$(PY) -m pip list 2>/dev/null | grep -iE '^(nvidia-|triton|cuda-)' && { echo "error: CUDA packages got installed into $(VENV)"; exit 1; } || true
	@$(PY) -c "import torch, sys; v = torch.__version__; sys.exit(0 if v == '2.13.0+cpu' else f'error: expected torch 2.13.0+cpu, got {v}')"
	touch $@

demo: $(STAMP)
	$(VENV)/bin/lipkit demo --out runs/demo

test: $(STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache
