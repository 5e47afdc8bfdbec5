# Two commands set everything up on a fresh Debian machine: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SOURCES := $(shell find core cli api executor transcoder operator migrations -name '*.py' 2>/dev/null)

export VIDEO_SERVICE_DID ?= did:web:localhost%3A2585
export VIDEO_PUBLIC_URL ?= http://127.0.0.1:2585

.PHONY: run test test-fast lint deps system-deps web-assets test-deps cluster-up cluster-down kind-up kind-down worker-image postgres-image bench crd manifests chart-readme clean

system-deps:
	@bash scripts/install-system-deps.sh

## hls.js for the watch and job pages (npm, pinned by api/static/npm/package-lock.json), cached
## outside the repo and copied into api/static/vendor/ (gitignored): no CDN at run time.
WEB_ASSETS := api/static/vendor/hls.min.js
$(WEB_ASSETS): api/static/npm/package-lock.json scripts/install-web-assets.sh
	@bash scripts/install-web-assets.sh

web-assets:
	@bash scripts/install-web-assets.sh

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel

# Editable install in strict mode: the folders map onto the atproto_video package (pyproject).
# The web assets first: a strict editable install links only the files present when it runs.
$(VENV)/.installed: pyproject.toml $(SOURCES) $(WEB_ASSETS) | $(BIN)/python
	$(BIN)/pip install -q --no-build-isolation -e '.[dev,operator]' --config-settings editable_mode=strict
	@touch $@

deps: system-deps web-assets $(VENV)/.installed

## The embedded service on 127.0.0.1:2585 in the foreground (SQLite + local storage under .data/).
# Private endpoints allowed: `atproto-video try-upload` identities live on loopback.
run: deps
	VIDEO_ALLOW_PRIVATE_ENDPOINTS=$${VIDEO_ALLOW_PRIVATE_ENDPOINTS:-1} $(BIN)/atproto-video serve

# Cold, the cluster tier builds Kubernetes from source (about 20 min on 2 cores, kubeadm
# included), the worker image and the quickstart Postgres image (about 30 s); all are cached under
# /var/cache/atproto-video, so a warm run takes seconds. The kind tier (tests/kind) builds kind
# and its node image itself (kind/up.sh: about 4 min cold) and runs for about 4 min.
test-deps: deps
	@bash scripts/install-system-deps.sh --test
	@bash scripts/install-test-deps.sh
	@if [ "$${VIDEO_SKIP_CLUSTER:-0}" = 1 ]; then \
	  echo "*** VIDEO_SKIP_CLUSTER=1: not building the test cluster or the worker image ***"; \
	else \
	  bash cluster/deps.sh && bash cluster/build.sh && bash transcoder-image/build.sh \
	    && bash transcoder-image/build.sh postgres; \
	fi
	@bash scripts/install-tools.sh

lint: deps
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy -p atproto_video.core -p atproto_video.cli -p atproto_video.api -p atproto_video.executor -p atproto_video.transcoder -p atproto_video.operator -p atproto_video.migrations

## The whole suite: unit, Postgres, API end to end, transcoder, PDS, image and cluster tiers.
test: test-deps lint
	$(BIN)/pytest -q -ra

test-fast: deps
	$(BIN)/pytest -q -ra -m 'not cluster and not image and not pds and not browser and not kind'

## A single-node Kubernetes on loopback, built from source (see cluster/README.md).
cluster-up:
	@bash cluster/up.sh

cluster-down:
	@bash cluster/down.sh

## A one-node kind cluster with the chart installed (README.md, "Try it on kind"): kind, its node
## image and its Docker engine are built and started here, nothing is pulled from a registry.
kind-up:
	@bash kind/up.sh

kind-down:
	@bash kind/down.sh

## The worker image (also the API and operator image), imported into the test cluster.
worker-image:
	@bash transcoder-image/build.sh --import

## The chart's quickstart Postgres image (postgresql.enabled on the test cluster:
## values-local-postgres.yaml), built like the worker image and imported.
postgres-image:
	@bash transcoder-image/build.sh postgres --import

bench: deps
	@bash scripts/install-system-deps.sh --bench
	PYTHONPATH=$(CURDIR) $(BIN)/python -m bench $(BENCH)

## Regenerate manifests/crd.yaml (and the chart's copy) from atproto_video.operator.crd.
crd: deps
	$(BIN)/atproto-video operator --print-crd > manifests/crd.yaml
	cp manifests/crd.yaml charts/atproto-video/crds/videojob.yaml

## Regenerate every generated manifest: the CRD (above) and the RBAC of manifests/rbac.yaml and
## the chart's files/rbac-rules.yaml, both from atproto_video.operator.rbac.
manifests: crd
	$(BIN)/atproto-video operator --print-rbac > manifests/rbac.yaml
	$(BIN)/atproto-video operator --print-chart-rbac > charts/atproto-video/files/rbac-rules.yaml

## Regenerate the values table of charts/atproto-video/README.md from the comments in values.yaml.
chart-readme: deps
	$(BIN)/python scripts/chart_readme.py

clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache .ruff_cache .import_linter_cache *.egg-info
