# depthseg-fas: a newcomer runs `make demo` and `make test`; everything else is optional.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch is installed as this pair (pip takes them from the local disk where they lie there)
TORCH_PIN ?= torch==2.14.1 torchvision==0.29.1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PYTHONUNBUFFERED := 1

.PHONY: setup test test-fast demo bench clean help

help:
	@echo "make demo   - set up the venv and run the main job end to end on the built-in sample data"
	@echo "make test   - set up the venv and run the test suite"
	@echo "make bench  - benchmarks (not part of the tests)"

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install $(TORCH_PIN)
	$(PY) -m pip install -e '.[test,insightface]'
	touch $@

test: setup
	$(PY) -m pytest -q -p no:cacheprovider --timeout=900

demo: setup
	$(VENV)/bin/depthseg-fas preprocess --input ../shared/data/faces --output runs/demo/store.zarr

bench: setup
	$(PY) -m bench.bench_depth
	$(PY) -m bench.bench_train

clean:
	rm -rf runs .pytest_cache
