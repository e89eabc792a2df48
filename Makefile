# Tandem: `make serve` runs the service, `make test` checks everything. Both set up on
# first use (a .venv with the pinned packages, buf from npm, Debian's Go toolchain and
# Debian's Chromium for the dashboard's browser tests) and do nothing more on later runs.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TOOLS := .tools
BUF := $(TOOLS)/node_modules/.bin/buf
BUF_VERSION := 1.75.0
GOPATH_DIR := $(CURDIR)/.gopath
GO_IMPORT := github.com/tandem-ml/tandem
GO_PACKAGES := golang-go protobuf-compiler protoc-gen-go protoc-gen-go-grpc \
	golang-google-grpc-dev golang-google-protobuf-dev golang-github-golang-protobuf-1-5-dev
PROTOS := $(wildcard proto/tandem/v1/*.proto proto/tandem/inference/*.proto)
APT := $(if $(filter 0,$(shell id -u)),,sudo) apt-get

.PHONY: serve test lint gen check-gen go-build pytest bench gpu-check setup clean

serve: $(VENV)/.installed
	$(VENV)/bin/tandem serve

test: setup lint check-gen go-build pytest

setup: $(VENV)/.installed $(BUF) $(TOOLS)/.go-installed $(TOOLS)/.chromium-installed

$(VENV)/.installed: requirements.txt requirements-dev.txt setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

$(BUF):
	npm install --silent --no-audit --no-fund --prefix $(TOOLS) @bufbuild/buf@$(BUF_VERSION)

$(TOOLS)/.go-installed:
	@mkdir -p $(TOOLS)
	@if ! (command -v go && command -v protoc-gen-go && command -v protoc-gen-go-grpc \
	      && test -d /usr/share/gocode/src/github.com/golang/protobuf \
	      && test -d /usr/share/gocode/src/google.golang.org/grpc) >/dev/null; then \
	  $(APT) update -qq && DEBIAN_FRONTEND=noninteractive $(APT) install -y -qq $(GO_PACKAGES); \
	fi
	touch $@

# The dashboard's browser tests drive Debian's Chromium through Playwright (pinned in
# requirements-dev.txt); Playwright's own browser download is never used.
$(TOOLS)/.chromium-installed:
	@mkdir -p $(TOOLS)
	@if ! command -v chromium >/dev/null; then \
	  $(APT) update -qq && DEBIAN_FRONTEND=noninteractive $(APT) install -y -qq chromium; \
	fi
	touch $@

# `buf breaking` holds proto/ to the contract of this commit of main (the last one before
# LogsRequest.max_events_per_message), read offline from .git: a clone needs its history
# (not `--depth 1`). Move it forward to any later commit of main at will. To break the
# contract on purpose (a new package version is the better way): in the breaking commit
# list the rules it breaks under `breaking: ignore_only:` in buf.yaml and say why in the
# README; in the next commit move this pin to the breaking commit and drop the ignore.
BUF_BREAKING_AGAINST := 2a4169957432612489077ae9bb3690a677d494f6

lint: $(VENV)/.installed $(BUF)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(BUF) lint
	$(BUF) format --diff --exit-code
	$(BUF) breaking --against '.git#ref=$(BUF_BREAKING_AGAINST)'

# Python stubs come from grpcio-tools' protoc; the Go stubs from Debian's protoc plugins
# run by that same protoc, so one compiler writes both.
gen: $(VENV)/.installed $(TOOLS)/.go-installed
	scripts/generate.sh clients

check-gen: $(VENV)/.installed $(TOOLS)/.go-installed
	@rm -rf $(TOOLS)/gen-check && mkdir -p $(TOOLS)/gen-check
	scripts/generate.sh $(TOOLS)/gen-check
	diff -r --exclude=__init__.py --exclude=__pycache__ $(TOOLS)/gen-check/python/tandem/v1 clients/python/tandem/v1
	diff -r --exclude=__init__.py --exclude=__pycache__ $(TOOLS)/gen-check/python/tandem/inference clients/python/tandem/inference
	diff -r $(TOOLS)/gen-check/go/tandemv1 clients/go/tandemv1
	diff -r $(TOOLS)/gen-check/go/inference clients/go/inference
	@echo "generated code is fresh"

# GOPATH mode, offline: the repo is linked into a private GOPATH under its import path.
go-build: $(TOOLS)/.go-installed
	@mkdir -p $(GOPATH_DIR)/src/$(dir $(GO_IMPORT))
	@ln -sfn $(CURDIR) $(GOPATH_DIR)/src/$(GO_IMPORT)
	cd $(GOPATH_DIR)/src/$(GO_IMPORT)/clients/go && \
	  GO111MODULE=off GOPROXY=off GOPATH=$(GOPATH_DIR):/usr/share/gocode \
	  go vet ./...

pytest: $(VENV)/.installed
	$(PY) -m pytest -q

# Ray Serve (the predict_c8_vs_ray_serve_... comparisons) is bench-only: installed here on
# first use, never by `make test`, whose smoke run skips without it.
bench: $(VENV)/.installed $(VENV)/.bench-installed
	RAY_USAGE_STATS_ENABLED=0 $(PY) -m bench

# The seed's GPU claims in one go on a machine with an NVIDIA GPU (under 8 minutes):
# bench/results/gpu.json and a table. Without a GPU it says so in one line and exits 0.
gpu-check: $(VENV)/.installed
	$(PY) -m bench.gpu_check

$(VENV)/.bench-installed: requirements-bench.txt $(VENV)/.installed
	$(PY) -m pip install --quiet -r requirements-bench.txt
	touch $@

clean:
	rm -rf $(TOOLS) $(GOPATH_DIR) .mypy_cache .pytest_cache .ruff_cache
