# fsslib: two commands on a fresh machine (see README).
#   make quickstart   the four papers side by side on the toy world: one model trained live, the rest from the zoo
#   make test         the whole test suite (unit tests, notebooks under nbval, a papermill smoke run); it ends with
#                     the 15 slowest tests and any test past its time budget (information: benchmarks/README.md)
#   make test-fast    the unit tests alone (no training, notebooks or papermill)
#   make notebooks    execute every lesson and solution at full settings, written back with their outputs
#   make docs         render the pages that quote results from their sources in docs/src/ (python -m fsslib.docs)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# pytest-xdist workers for `make test`, one thread each; a notebook's cells stay on one worker (conftest.py)
TEST_WORKERS ?= 2

.PHONY: install quickstart test test-fast notebooks benchmark docs

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[all]"
	touch $@

quickstart: install
	$(PY) -m fsslib.runs papermill_runs/quickstart.yaml

test: install
	$(PY) -m pytest -q -n $(TEST_WORKERS) --durations=15 tests notebooks --nbval-lax --nbval-sanitize-with nbval_sanitize.cfg

test-fast: install
	$(PY) -m pytest -q -n $(TEST_WORKERS) tests -m "not slow"

benchmark: install
	$(PY) benchmarks/foundation.py

notebooks: install
	$(PY) -m fsslib.lessons

docs: install
	$(PY) -m fsslib.docs
