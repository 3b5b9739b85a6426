# pfha: `make demo` and `make test` install what they need on a fresh Debian 12 machine
# (as root) and then run. Every step is idempotent.

SHELL      := /bin/bash
SYSPYTHON  := /usr/bin/python3
VENV       := .venv
PY         := $(VENV)/bin/python
# Debian's python3-nftables (the libnftables binding) only exists for the system Python,
# so the virtualenv is made from /usr/bin/python3 with --system-site-packages.
APT_PKGS   := python3 python3-venv python3-nftables nftables conntrack iproute2 iputils-ping \
              tcpdump tshark ucarp keepalived conntrackd iperf3 ethtool procps
STAMP_APT  := $(VENV)/.apt-stamp
STAMP_PIP  := $(VENV)/.pip-stamp
PYTEST_ARGS ?=

.PHONY: all deps test demo bench clean

all: test

deps: $(STAMP_PIP)

$(STAMP_APT):
	@missing=$$(for p in $(APT_PKGS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:" $$missing; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi
	@[ -x $(PY) ] || $(SYSPYTHON) -m venv --system-site-packages $(VENV)
	@touch $@

$(STAMP_PIP): $(STAMP_APT) pyproject.toml
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $@

test: deps
	$(PY) -m pytest $(PYTEST_ARGS)

demo: deps
	$(VENV)/bin/pfha demo

bench: deps
	$(PY) -m bench

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .hypothesis
