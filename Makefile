# The README's two commands: `make demo` and `make test`. Each sets itself up on a fresh machine.
VENV ?= .venv
export MUJOCO_GL ?= osmesa
export PYOPENGL_PLATFORM ?= osmesa
export HF_HUB_OFFLINE ?= 1

.PHONY: setup demo test test-slow bench clean

setup: $(VENV)/.armflow-installed

$(VENV)/.armflow-installed: pyproject.toml setup.py scripts/setup.sh
	VENV=$(VENV) ./scripts/setup.sh
	touch $@

demo: setup
	$(VENV)/bin/armflow quickstart

test: setup
	$(VENV)/bin/python -m pytest -m "not slow" -q --timeout=900

test-slow: setup
	$(VENV)/bin/python -m pytest -m slow -q

bench: setup
	$(VENV)/bin/armflow bench sim
	$(VENV)/bin/armflow bench inference
	$(VENV)/bin/armflow bench train

clean:
	rm -rf runs .pytest_cache
