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

$(VENV)/.ready: pyproject.toml
	test -x $(PY) || $(PYTHON_BASE) -m venv $(VENV)
	$(PIP) install -q --upgrade pip wheel
	$(PIP) install -q $(TORCH_PIN)
	# mmcv 2.1.0 has no wheel for this torch: it builds its ops against the installed torch, and its
	# setup.py needs pkg_resources, which setuptools dropped in 70; torch wants setuptools >= 77 back after.
	$(PIP) install -q "setuptools<70"
	MMCV_WITH_OPS=1 $(PIP) install --no-build-isolation mmcv==2.1.0
	$(PIP) install -q "setuptools>=77.0.3"
	$(PIP) install -q -e ".[test]"
	touch $@

test: venv chromium
	$(PY) -m pytest -q

# Debian's chromium, in which tests/evaluation/test_report_in_browser.py opens every report.html (Playwright drives
# it and downloads no browser of its own).
.PHONY: chromium
chromium:
	@command -v chromium >/dev/null || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }

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

# The image tag has one source, wsseg/image.py (the WSSEG_IMAGE environment variable overrides it there);
# exporting it makes `make compile IMAGE=...` write pipelines that run the image `make image` built.
IMAGE ?= $(shell PYTHONPATH=. $(firstword $(wildcard $(PY)) $(PYTHON_BASE)) -c 'from wsseg.image import WSSEG_IMAGE; print(WSSEG_IMAGE)')
export WSSEG_IMAGE := $(IMAGE)

image:
	@docker info >/dev/null 2>&1 || { echo "make image: no Docker engine answers (docker info failed); run it where Docker runs, or set DOCKER_HOST" >&2; exit 1; }
	docker build -f components/Dockerfile -t $(IMAGE) .

# make submit PIPELINE=wsss HOST=http://localhost:8080 PARAMS="data=s3://wsseg/datasets/voc store_uri=s3://wsseg/runs"
PIPELINE ?= wsss
submit: compile
	@test -n "$(HOST)" || { echo "make submit: set HOST, the Kubeflow Pipelines address (e.g. HOST=http://localhost:8080)" >&2; exit 1; }
	$(VENV)/bin/wsseg submit $(PIPELINE) --host $(HOST) $(foreach param,$(PARAMS),--param $(param))
