# fedsilo: the two commands are `make demo` and `make test`; each sets itself up.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.fedsilo-installed
DEMO_OUT ?= runs/demo-$(shell date +%Y%m%d-%H%M%S)

.PHONY: demo test test-deploy test-fast bench bench-poisoning venv clean

venv: $(STAMP)

# torch is installed first and pinned: pip then takes the CPU build from this
# machine's disk instead of resolving a multi-GB CUDA build from the index.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/fedsilo demo --out $(DEMO_OUT)

test: $(STAMP)
	$(PY) -m ruff check src tests benchmarks docs
	$(PY) -m pytest -n 2 -q -m "not deploy"

# SuperLink + SuperNodes as separate processes on loopback (TLS, SuperNode auth): ~5 min on 2 cores.
test-deploy: $(STAMP)
	$(PY) -m pytest -q -m deploy tests/deploy/test_deploy_e2e.py

bench: $(STAMP)
	$(PY) -m benchmarks.run_all

# Quality study, not a speed benchmark: 17 training runs, two at a time (about 25 min on 2 cores).
bench-poisoning: $(STAMP)
	$(PY) -m benchmarks.poisoning

clean:
	rm -rf $(VENV) runs .pytest_cache
