PYTHON_BASE ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The one locked environment: `make venv` (and so `make test`, CI's .ci/run, `make demo`) and the image
# (components/Dockerfile) install requirements.lock, every package at one version and each file checked against
# its hashes. `make lock` compiles it from pyproject.toml (dependencies and the test extra) and requirements.in.
LOCK := requirements.lock
# mmcv stays outside the hashed lock, pinned by version: it has no wheel for the locked torch, so it is built
# from source against the installed torch, and a wheel built on one machine (or found in WHEEL_CACHE) has
# another hash than one built on the next. Its dependencies are in the lock, so it installs with --no-deps.
MMCV_PIN := mmcv==2.1.0
# mmcv's setup.py and this project's build backend need pkg_resources, which setuptools dropped in 70: both are
# built against this setuptools, without build isolation; the lock's setuptools (torch wants >= 77.0.3) comes
# back after.
BUILD_SETUPTOOLS_PIN := setuptools==69.5.1
# A cache of prebuilt wheels (mmcv with ops takes ~20 min to build); optional.
WHEEL_CACHE ?= $(wildcard ../shared/wheels)
# Exporting PIP_FIND_LINKS replaces the find-links of pip's own config (where this kind of machine keeps the lock's
# torch), so those are carried over.
PIP_CONFIG_FIND_LINKS := $(shell $(PYTHON_BASE) -m pip config get global.find-links 2>/dev/null)
export PIP_FIND_LINKS := $(strip $(WHEEL_CACHE) $(PIP_FIND_LINKS) $(PIP_CONFIG_FIND_LINKS))

.PHONY: venv lock test test-components demo compile lint bench image submit clean

venv: $(VENV)/.ready

# The lock's torch is the CPU build, hashed as the file pip finds on this kind of machine (in its find-links).
# PyPI's torch wheel for Linux is the CUDA build, which the hash refuses (the image installs it instead): on
# another machine give pip PyTorch's CPU index, PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu, or
# run `make lock` there (that the index's file is this one byte for byte is not checked here).
$(VENV)/.ready: $(LOCK) pyproject.toml
	test -x $(PY) || $(PYTHON_BASE) -m venv $(VENV)
	$(PIP) install -q --require-hashes -r $(LOCK)
	$(PIP) install -q $(BUILD_SETUPTOOLS_PIN)
	MMCV_WITH_OPS=1 $(PIP) install --no-build-isolation --no-deps $(MMCV_PIN)
	$(PIP) install -q --no-build-isolation --no-deps -e .
	$(PIP) install -q --require-hashes -r $(LOCK)
	$(PIP) check
	touch $@

# Regenerates requirements.lock for Python 3.11 on Linux x86_64 (PyPI must answer; about 2 minutes). Versions
# already in the lock are kept unless an input asks otherwise; LOCK_UPGRADE=--upgrade moves every package to its
# newest release, LOCK_UPGRADE="--upgrade-package NAME" one. Two edits follow pip-compile: torch's pin loses its
# "+cpu" (the hash still admits only the CPU build) so that the image's CUDA build of the same version satisfies
# it; mmcv (see MMCV_PIN) and the project itself are left out as "unsafe" packages.
LOCK_TOOLS := build/lock-tools
LOCK_UPGRADE ?=
lock:
	test -x $(LOCK_TOOLS)/bin/python || $(PYTHON_BASE) -m venv $(LOCK_TOOLS)
	$(LOCK_TOOLS)/bin/python -m pip install -q pip==26.3 pip-tools==7.6.2 $(BUILD_SETUPTOOLS_PIN) wheel==0.48.0
	CUSTOM_COMPILE_COMMAND="make lock" $(LOCK_TOOLS)/bin/pip-compile --quiet --no-build-isolation \
		--generate-hashes --no-emit-index-url --no-emit-find-links --strip-extras --extra test \
		--unsafe-package mmcv --unsafe-package wsseg $(LOCK_UPGRADE) -o $(LOCK) pyproject.toml requirements.in
	sed -i -E 's/^torch==([0-9][0-9.]*)\+cpu /torch==\1 /' $(LOCK)

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
