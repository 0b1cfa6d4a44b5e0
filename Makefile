# Two commands do all set-up: `make train` and `make test` create .venv on first use.
# Another torch build (e.g. CUDA):  make train TORCH="torch==2.5.1 --index-url https://download.pytorch.org/whl/cu124"
VENV  ?= .venv
PY    := $(VENV)/bin/python
TORCH ?= torch==2.13.0
ARGS  ?=

.PHONY: train test lint setup
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

train: $(VENV)/.installed
	$(VENV)/bin/attnfit-train $(ARGS)

test: $(VENV)/.installed
	$(PY) -m pytest -q $(ARGS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
