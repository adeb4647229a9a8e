# ownas: `make test` installs everything the tests need (Debian 12, root or sudo) and runs them.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# frr: vtysh and FRR's daemons check and run the generated frr.conf; bird2 plays the upstreams;
# openssh carries the deploy; iproute2 builds the lab's namespaces.
APT_PACKAGES := frr frr-pythontools bird2 openssh-server openssh-client iproute2 iputils-ping \
	procps python3-venv

.PHONY: all deps system-deps test lint golden clean

all: test

system-deps:
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -q
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
		$(APT_PACKAGES)

$(BIN)/ownas: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[test]'
	touch $@

deps: system-deps $(BIN)/ownas

lint: $(BIN)/ownas
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: deps lint
	$(BIN)/pytest

# Regenerate the golden files after an intended change, then review the diff line by line
# against shared/reference/reference-network.md and update tests/golden/REVIEW.md.
golden: $(BIN)/ownas
	rm -rf tests/golden/router01 tests/golden/vps01 tests/golden/dcgw01
	$(BIN)/ownas render -o tests/golden
	git diff --stat -- tests/golden

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
