# gpuex developer entry points. Every target sets itself up first (`make setup` is idempotent).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

VENV := .venv
PY := $(VENV)/bin/python
# tools/ first: our solc-js shim must win over the downloading `solc` that slither's solc-select installs.
export PATH := $(CURDIR)/tools:$(CURDIR)/$(VENV)/bin:$(PATH)
export PYTHONPATH := $(CURDIR)
SETUP_STAMP := $(VENV)/.setup-done
COMPILE_STAMP := build/.compiled
CONTRACT_SOURCES := $(shell find contracts -name '*.sol')
SOLC_VERSION := 0.8.28
BROWNIE_VERSION := 1.22.2
SLITHER_VERSION := 0.11.6
# The oldest Node.js major the packages in package-lock.json accept (README.md and .ci/run say the same).
NODE_MAJOR := 20

# Stateful-test sizes: CI explores thousands of steps; `make fuzz` more than 10,000.
STATEFUL_EXAMPLES ?= 120
STATEFUL_STEPS ?= 30

.PHONY: setup compile test test-contracts test-offchain test-e2e lint gas fuzz demo clean browser containers

setup: $(SETUP_STAMP) link-tools $(COMPILE_STAMP)

$(SETUP_STAMP): pyproject.toml package.json package-lock.json
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@# The compiled (mypyc) wheel breaks stateful tests and network config: build Brownie pure-Python.
	BROWNIE_NOCOMPILE=1 $(PY) -m pip install -q --no-binary eth-brownie eth-brownie==$(BROWNIE_VERSION)
	@# Brownie pins the shared libraries (web3, aiohttp, pydantic, eth-account) and python-dotenv==0.16.0, which
	@# every pydantic-settings release asks to be >= 0.21: install ours without dependencies so no pin moves.
	@# eciespy seals renters' secret values to the agent's key (it needs only coincurve and pycryptodome, both here).
	$(PY) -m pip install -q --no-deps -e . pydantic-settings==2.12.0 nvidia-ml-py==13.580.82 coincurve==21.0.0 \
		eciespy==0.4.7
	$(PY) -m pip install -q slither-analyzer==$(SLITHER_VERSION)
	@# Demo progress and plots, the browser test's driver, the linter and the type checker; none of these moves a
	@# Brownie pin (mypy 1.19 would: it needs a newer mypy-extensions than Brownie's).
	$(PY) -m pip install -q rich==15.0.0 matplotlib==3.11.2 selenium==4.51.0 pexpect==4.9.0 ruff==0.17.6 \
		mypy==1.18.2
	@# npm skips an optional package whose engines the running Node does not meet: anvil's builds need NODE_MAJOR.
	@major=$$(node -p 'process.versions.node.split(".")[0]'); if [ "$$major" -lt $(NODE_MAJOR) ]; then \
		echo "make setup: Node.js $(NODE_MAJOR) or later is needed (package-lock.json), not $$(node --version)" >&2; \
		exit 1; fi
	npm install --no-audit --no-fund --loglevel=error
	touch $@

# Links that live outside the venv (HOME may be new) are refreshed on every run; they cost nothing.
.PHONY: link-tools
link-tools: $(SETUP_STAMP)
	ln -sf $(CURDIR)/$$(ls -d node_modules/@foundry-rs/anvil-linux-*/bin/anvil | head -1) $(VENV)/bin/anvil
	mkdir -p $(HOME)/.solcx
	ln -sf $(CURDIR)/tools/solc $(HOME)/.solcx/solc-v$(SOLC_VERSION)

## compile: the contracts' build artifacts (build/contracts/*.json), from which the off-chain code takes every ABI;
## `setup` already makes them, so this is `setup` under the name the other targets use.
compile: setup

# Rebuilt when a contract, the compiler settings or the installed packages change; nothing to do otherwise.
# link-tools is order-only: it runs on every make, and must not make the artifacts look stale each time.
$(COMPILE_STAMP): $(CONTRACT_SOURCES) brownie-config.yaml $(SETUP_STAMP) | link-tools
	brownie compile
	touch $@

## test: everything CI runs — static analysis, the contract suite and the off-chain suite on a real anvil.
test: lint test-contracts test-offchain test-e2e

test-contracts: setup
	GPUEX_STATEFUL_EXAMPLES=$(STATEFUL_EXAMPLES) GPUEX_STATEFUL_STEPS=$(STATEFUL_STEPS) brownie test tests/contracts

test-offchain: compile containers
	brownie test tests/offchain

## test-e2e: agent -> three oracles (2-of-3) -> chain -> balances, for every way a rental ends; the web page in
## a headless Chromium.
test-e2e: compile browser containers
	brownie test tests/e2e

## browser: Debian's chromium and chromedriver, which the web page's browser test drives (apt, as root or
## through sudo). Selenium is never let download a browser or driver.
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then sudo=; elif command -v sudo >/dev/null; then sudo=sudo; else \
		echo "make browser: /usr/bin/chromium or /usr/bin/chromedriver is missing; install the Debian packages" \
			"chromium and chromium-driver as root" >&2; exit 1; fi; \
	$$sudo apt-get update -q && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver

## containers: what the agent runs renters' jobs with (Debian's podman, runc and catatonit, apt as root or through
## sudo), and the busybox job image of the demo, the devnet and the tests, built here from Debian's busybox-static.
containers:
	@missing=""; for tool in podman runc catatonit; do command -v $$tool >/dev/null || missing="$$missing $$tool"; done; \
	if [ ! -x /bin/busybox ] || ldd /bin/busybox >/dev/null 2>&1; then missing="$$missing busybox-static"; fi; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then sudo=; elif command -v sudo >/dev/null; then sudo=sudo; else \
			echo "make containers: missing$$missing; install these Debian packages as root" >&2; exit 1; fi; \
		$$sudo apt-get update -q && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi
	tools/build-job-image

## lint: ruff (lint and format) over the Python, mypy over offchain/ (strict on the chain and protocol layers), and
## slither over the contracts; each fails on any finding.
lint: compile
	ruff check offchain tests scripts bench
	ruff format --check offchain tests scripts bench
	mypy
	slither contracts/ --solc-standard-json --solc-remaps "@openzeppelin=node_modules/@openzeppelin" \
		--exclude-dependencies --filter-paths "node_modules|contracts/test" --fail-medium

## gas: the gas table of a fixed scenario, against the budgets of issues #2 and #13.
gas: compile
	$(PY) -m scripts.run gas

## bench: gas, oracle ingest, 100,000 simulated agents through one oracle's verifier, and sampler CPU, each against its target;
## writes docs/PERFORMANCE.md and docs/performance.png. It moves its chain's clock: give it a network of its own.
BENCH_NETWORK ?= development
.PHONY: bench
bench: compile containers
	$(PY) -m bench --network $(BENCH_NETWORK)

## fuzz: the stateful invariant suite with more than 10,000 steps (not in CI).
fuzz: setup
	GPUEX_STATEFUL_EXAMPLES=400 GPUEX_STATEFUL_STEPS=50 brownie test tests/contracts/stateful

## demo: a whole local exchange on anvil: two providers, three rentals (completed, terminated, timed out), a
## ledger that must sum to zero, and out/demo.png.
demo: compile containers
	$(PY) -m scripts.run demo

clean:
	rm -rf build reports .hypothesis
