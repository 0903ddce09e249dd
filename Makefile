# depthseg-fas: a newcomer runs `make demo` and `make test`; everything else is optional.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch is installed as this pair (pip takes them from the local disk where they lie there)
TORCH_PIN ?= torch==2.14.1 torchvision==0.29.1
SAMPLE ?= data/sample
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PYTHONUNBUFFERED := 1

.PHONY: help setup test test-fast demo sample-data up down status shell bench stress preview clean

help:
	@echo "make demo         set up, make the synthetic sample set, start the local Prefect stack,"
	@echo "                  run the preprocess and train deployments, print metrics and paths"
	@echo "make test         set up and run the test suite"
	@echo "make up/down/status  the local Prefect stack (server, work pool, deployments, worker)"
	@echo "make shell        a shell with PREFECT_API_URL etc. set for the local stack"
	@echo "make bench        benchmarks (not part of the tests); make stress: full load test"

setup: $(VENV)/.installed

# editable_mode=compat: a .pth path entry, not an import hook, so the installed packages win over
# any same-named folder earlier on sys.path (a Dask worker's spill folder `storage/`; flows/workerenv.py)
$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install $(TORCH_PIN)
	$(PY) -m pip install -e '.[test,insightface]' --config-settings editable_mode=compat
	$(PY) scripts/fetch_mediapipe_model.py
	touch $@

# two pytest-xdist workers, a test file each at a time (module fixtures built once): most long tests
# wait on subprocesses, servers and I/O, so one worker alone left a core idle (load ~1.2 on 2 cores)
test: setup
	$(PY) -m pytest -q -p no:cacheprovider --timeout=900 --durations=30 -n 2 --dist loadfile

test-fast: setup
	$(PY) -m pytest -q -p no:cacheprovider -m "not stack and not slow" -n 2 --dist loadfile

sample-data: setup
	@test -f $(SAMPLE)/manifest.csv || $(VENV)/bin/depthseg-fas synth --out $(SAMPLE) --identities 12 --seed 0

demo: setup sample-data
	scripts/demo.sh

up: setup
	scripts/stack.sh up

down:
	scripts/stack.sh down

status:
	scripts/stack.sh status

shell: up
	@echo "entering a shell with the local Prefect stack's settings (exit to leave)"
	@bash --rcfile <(cat ~/.bashrc 2>/dev/null; cat .prefect/env) -i

bench: setup
	$(PY) -m bench.bench_depth
	$(PY) -m bench.bench_train
	$(PY) -m bench.bench_pipeline
	$(PY) -m bench.bench_loader
	$(PY) -m bench.bench_labels

stress: setup
	DEPTHSEG_STRESS=full $(PY) -m pytest -q -p no:cacheprovider tests/flows/test_load.py

preview: setup
	$(PY) scripts/synth_preview.py

clean:
	rm -rf runs .pytest_cache
