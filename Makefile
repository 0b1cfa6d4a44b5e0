# Two commands do all set-up: `make train` and `make test` create .venv on first use.
# Another torch build (e.g. CUDA):  make train TORCH="torch==2.5.1 --index-url https://download.pytorch.org/whl/cu124"
VENV  ?= .venv
PY    := $(VENV)/bin/python
TORCH ?= torch==2.13.0
ARGS  ?=

.PHONY: train test lint setup browser
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

train: $(VENV)/.installed
	$(VENV)/bin/attnfit-train $(ARGS)

test: $(VENV)/.installed browser
	$(PY) -m pytest -q $(ARGS)

# The explorer page's browser test drives Debian's chromium (Playwright never downloads a browser). Installed when
# missing and we are root or have sudo; otherwise a note (the test then skips, except under CI where it fails).
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO=sudo; \
	  else echo "note: chromium is not installed and neither root nor sudo is available: the browser test will skip"; exit 0; fi; \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q chromium; }

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
