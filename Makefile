# Two entry points (see README): `make run` and `make test`. Each builds its own virtualenv.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: run test bench editor clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), f"Python 3.11 required, found {sys.version.split()[0]}"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Dependencies come pinned and hashed from the lock files (.ci/lock.sh regenerates them).
$(VENV)/.installed: pyproject.toml requirements.lock | $(BIN)/python
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml requirements-test.lock | $(BIN)/python
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements-test.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@ $(VENV)/.installed

# Main job on the embedded defaults: the demo (simulated fleet -> windows in SQLite -> per-sensor models -> anomalies).
run: $(VENV)/.installed
	$(BIN)/sensorflow demo

# The whole test suite (installs what the integration tests need first).
test: $(VENV)/.installed-test
	bash .ci/test-deps.sh
	$(BIN)/python -m pytest

bench: $(VENV)/.installed-test
	$(BIN)/python bench/dataflow.py

# A link tree of the mapped packages for static tools (pyright, Pylance, mypy): CONTRIBUTING.md.
editor: $(VENV)/.installed
	mkdir -p build
	$(BIN)/python -c "from setuptools import build_meta; build_meta.build_editable('build', {'editable_mode': 'strict'})"

clean:
	rm -rf $(VENV) sensorflow.db sensorflow.db-wal sensorflow.db-shm
