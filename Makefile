# Entry points for a fresh machine; each installs what is missing first.
#   make job        the main job: the multi-label tagger, all stages, on its synthetic twin (CPU, minutes)
#   make test       the test suite
#   make test-fast  the tests that train no model end to end (under a minute)
#   make lint       ruff check + ruff format --check
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install job test test-fast lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[dev,sweeps]'
	touch $(STAMP)

job: $(STAMP)
	$(PY) -m experiments.train

# Test files run in $(WORKERS) processes (pytest-xdist; a file's tests stay in one process, so its
# module fixtures run once), the longest first (tests/durations.json); WORKERS=0 runs them in this one.
WORKERS ?= 2
XDIST   := -n $(WORKERS) --dist loadfile --no-loadscope-reorder
test: $(STAMP)
	$(PY) -m pytest -q $(XDIST)

test-fast: $(STAMP)
	$(PY) -m pytest -q $(XDIST) -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf logs .pytest_cache
