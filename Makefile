# pfha: `make demo` and `make test` install what they need on a fresh Debian 12 machine
# (as root) and then run. Every step is idempotent.

SHELL      := /bin/bash
SYSPYTHON  := /usr/bin/python3
VENV       := .venv
PY         := $(VENV)/bin/python
# Debian's python3-nftables (the libnftables binding) only exists for the system Python,
# so the virtualenv is made from /usr/bin/python3 with --system-site-packages.
APT_PKGS   := python3 python3-venv python3-nftables nftables conntrack iproute2 iputils-ping \
              tcpdump tshark ucarp keepalived conntrackd iperf3 ethtool procps \
              gcc libc6-dev python3-dev
# gcc and python3-dev: setup.py compiles the pf.conf front end's hot modules with mypyc
# (pip fetches mypy for the build only); without them the install stays pure Python.
CONF_SRC   := $(wildcard src/pfha/conf/*.py)
STAMP_APT  := $(VENV)/.apt-stamp
STAMP_PIP  := $(VENV)/.pip-stamp
PYTEST_ARGS ?=

.PHONY: all deps test demo bench lint clean

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

# Rebuilt when the compiled modules' sources change (a stale build is ignored, not used).
# If the build environment cannot be set up (no network to fetch mypy), install pure Python.
$(STAMP_PIP): $(STAMP_APT) pyproject.toml setup.py $(CONF_SRC)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]' || \
	  PFHA_NO_COMPILE=1 $(PY) -m pip install -q --no-build-isolation -e '.[test]'
	@$(PY) -c 'import pfha.conf; print("pf.conf front end:", pfha.conf.implementation())'
	@touch $@

test: deps
	$(PY) -m pytest $(PYTEST_ARGS)

demo: deps
	$(VENV)/bin/pfha demo

bench: deps
	$(PY) -m bench

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .hypothesis .mypy_cache
	rm -f src/*.so src/pfha/conf/*.so
