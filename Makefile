# The two commands of the README. Each creates the virtual environment from pyproject.toml if missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.percept-installed
OUT := $(CURDIR)/outputs

.PHONY: demo test install clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

## The main job on the embedded default: offline, CPU, minutes.
demo: $(STAMP)
	$(PY) -m percept demo --out $(OUT)/demo

## The test suite (no GPU, no internet needed).
test: $(STAMP)
	$(PY) -m pytest

clean:
	rm -rf $(OUT) .pytest_cache
