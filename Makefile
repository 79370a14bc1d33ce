# Two entry points for a fresh machine; each installs what is missing first.
#   make job    the main job: the multi-label tagger, all stages, on its synthetic twin (CPU, minutes)
#   make test   the test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install job test clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[dev,sweeps]'
	touch $(STAMP)

job: $(STAMP)
	$(PY) -m experiments.train experiment=tagger

test: $(STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf logs .pytest_cache
