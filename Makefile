# ownas: `make test` installs everything the tests need (Debian 12) and runs them; as root, as
# the lab's end-to-end tests build network namespaces (`sudo make test` otherwise).

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# debootstrap builds the Debian 13 root FRR 10 runs from (FRR checks and runs the generated
# frr.conf; stayrtr serves the lab's ROAs; tasks/lab/debian13.py); bird2 plays the upstreams;
# openssh carries the deploy (socat into the lab's namespaces); iproute2 and util-linux
# (unshare, nsenter) build the lab; netcat-openbsd is FreeBSD's nc (from OpenBSD); tcsh is
# FreeBSD's csh, a deploy user's login shell the composite read must pass. Debian 12's own frr
# (8.4) is not used.
APT_PACKAGES := debootstrap bird2 openssh-server openssh-client socat iproute2 netcat-openbsd \
	util-linux iputils-ping procps python3-venv tcsh

# `make demo` keeps its lab apart from one you run yourself (`ownas lab up`, in .lab).
DEMO := --dir .lab-demo --prefix ownas-demo

.PHONY: all deps system-deps frr10 test lint golden demo bench clean

all: test

system-deps:
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -q
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
		$(APT_PACKAGES)

$(BIN)/ownas: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[test]'
	touch $@

# Built when missing; the wrappers in build/frr10-bin are written every time (cheap).
frr10: system-deps $(BIN)/ownas
	$(SUDO) $(BIN)/python -m tasks.lab.debian13

deps: system-deps $(BIN)/ownas frr10

lint: $(BIN)/ownas
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: deps lint
	$(BIN)/pytest

# The example inventory deployed end to end in the lab, then the convergence report; the lab is
# removed at the end, also when a step fails.
demo: deps
	$(BIN)/ownas lab down $(DEMO)
	$(BIN)/ownas lab up $(DEMO)
	trap '$(BIN)/ownas lab down $(DEMO)' EXIT; \
		$(BIN)/pyinfra .lab-demo/inventory.py deploy.py -y && \
		echo && $(BIN)/ownas lab status $(DEMO)

# What a deploy costs, measured in the lab (root): one table of wall times, their ratio to
# `pyinfra INV exec -- true` and the commands each host ran. Not part of `make test`.
bench: deps
	$(BIN)/python -m tasks.lab.bench

# Regenerate the golden files after an intended change, then review the diff line by line
# against the reference (docs/reference-network.md; tests/golden/REVIEW.md quotes the original
# write-up) and update tests/golden/REVIEW.md.
golden: $(BIN)/ownas
	rm -rf tests/golden/router01 tests/golden/vps01 tests/golden/dcgw01
	$(BIN)/ownas render -o tests/golden
	git diff --stat -- tests/golden

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .lab-demo .lab-bench build
