PYTHON_BASE ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_PIN := torch==2.13.0
# A cache of prebuilt wheels (mmcv with ops takes ~20 min to build); optional.
WHEEL_CACHE ?= $(wildcard ../shared/wheels)
export PIP_FIND_LINKS := $(strip $(WHEEL_CACHE) $(PIP_FIND_LINKS))

.PHONY: venv test test-components demo compile lint bench image submit clean

venv: $(VENV)/.ready

$(VENV)/.ready: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON_BASE) -m venv $(VENV)
	$(PIP) install -q --upgrade pip "setuptools<70" wheel
	$(PIP) install -q $(TORCH_PIN)
	# mmcv 2.1.0 has no wheel for this torch: it builds its ops against the installed torch.
	MMCV_WITH_OPS=1 $(PIP) install --no-build-isolation mmcv==2.1.0
	$(PIP) install -q -e ".[test]"
	touch $@

test: venv
	$(PY) -m pytest -q

# Each component alone, then whole DAGs, under kfp.local on a tiny synthetic dataset.
test-components: venv
	$(PY) -m pytest -q tests/test_components.py

demo: venv
	$(VENV)/bin/wsseg demo --out runs/demo

compile: venv
	$(VENV)/bin/wsseg compile --out build/pipelines

bench: venv
	$(PY) -m wsseg.bench --out build/bench.json

lint: venv
	$(PY) -m ruff check wsseg components pipelines tests

clean:
	rm -rf $(VENV) build *.egg-info
