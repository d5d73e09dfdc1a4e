# Atelier: `make run` starts the studio on http://127.0.0.1:7860, `make test` runs every test,
# `make test-fast` only the unit tests (no Redis, no workers, no browser).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_INSTALL := $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq
ARGS ?=

.PHONY: install run test test-fast lint bench bench-engines system-deps browser clean

# python3-venv is missing on a bare Debian; install it when `python3 -m venv` cannot work.
# OpenCV (opencv-python, which insightface asks for) needs libGL and glib.
system-deps:
	@$(PYTHON) -c "import ensurepip, venv" 2>/dev/null || { $(APT_INSTALL) python3-venv python3-pip; }
	@{ ldconfig -p | grep -q libGL.so.1 && ldconfig -p | grep -q libgthread-2.0.so.0; } || { $(APT_INSTALL) libgl1 libglib2.0-0; }

$(VENV)/.installed: requirements.txt requirements-dev.txt
	@$(MAKE) --no-print-directory system-deps
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$$(grep -m1 '^torch==' requirements.txt | cut -d' ' -f1)"
	$(PY) -m pip install -q -r requirements-dev.txt
	@echo "Compiling rembg's numba code once (about a minute), so that no first job waits for it"
	$(PY) -c "import rembg"
	@touch $@

install: $(VENV)/.installed

# Debian's Chromium for the end-to-end tests (Playwright cannot download its own browser here).
browser:
	@command -v chromium >/dev/null || { $(APT_INSTALL) chromium; }

run: install
	$(PY) app.py $(ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: install browser lint
	$(PY) -m pytest $(PYTEST_ARGS)

# The tests marked slow (tests/conftest.py: Redis, Celery workers, a browser) left out.
test-fast: install
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

bench: install
	$(PY) benchmarks/run.py $(ARGS)
	$(PY) benchmarks/gradio_path.py $(GRADIO_ARGS)
	$(PY) benchmarks/batch.py $(BATCH_ARGS)
	$(PY) benchmarks/teams.py $(TEAMS_ARGS)

# The engines on tiny models: rembg and insightface, LaMa's crop strategy, diffusers steps and overhead.
bench-engines: install
	$(PY) benchmarks/engines.py
	$(PY) benchmarks/inpainting.py
	$(PY) benchmarks/diffusion.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache test-artifacts
