# consul-medic: the commands a newcomer runs.
#   make demo    the self-heal story end to end on this machine (root, Debian/Ubuntu)
#   make test    the whole suite: unit, real Consul, real Docker
#   make bench   the speed figures (a table, and bench-results.json)
#   make install PREFIX=/opt/consul-medic   a production install in its own virtualenv
#   make chaos   a seeded random fault schedule on 3 Docker hosts (DURATION=10m SEED=1; chaos-results.json)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PYTEST_ARGS ?=
PREFIX ?= /opt/consul-medic

.PHONY: dev-links lint help venv testbed test unit demo demo-down demo-failover bench chaos hosts-up hosts-down clean consul-up consul-down config install

help:
	@sed -n '1,7p' Makefile

$(BIN)/medic-check: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]' --config-settings editable_mode=compat
	$(MAKE) --no-print-directory dev-links
	@touch $@

# The editable install without setuptools' import hook (~20 ms of CPU on every interpreter start):
# $(VENV)/src/consul_medic/{handlers,watches,specs} link to the working tree, and the install's one
# plain-path .pth names $(VENV)/src instead of the checkout (so `import handlers` does not work).
dev-links:
	mkdir -p $(VENV)/src/consul_medic
	for d in handlers watches specs; do ln -sfn "$(CURDIR)/$$d" "$(VENV)/src/consul_medic/$$d"; done
	for p in $(VENV)/lib/python3*/site-packages/__editable__.consul_medic-*.pth; do echo "$(abspath $(VENV))/src" > "$$p"; done

venv: $(BIN)/medic-check

testbed:
	bash testbed/install.sh

# pytest exits 5 when it collected nothing: that is a failure here, like any non-zero.
test: venv lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# ruff (pinned in setup.cfg's test extra): pyflakes rules and BLE001 (no blind except outside a marked boundary;
# product code only), zero findings over handlers/, watches/, tests/, testbed/
lint: venv
	$(BIN)/ruff check handlers watches tests testbed

unit: venv
	$(BIN)/python -m pytest -m 'not consul and not docker' $(PYTEST_ARGS)

demo: testbed venv
	bash testbed/demo.sh

demo-down:
	bash testbed/demo.sh down

# one Redis failover with its timeline (own throwaway agent on free ports; cleans up after itself)
demo-failover: testbed venv
	$(BIN)/python testbed/demo_failover.py

# the bench extra (matplotlib, for the time-to-heal picture) only where `make bench` runs
$(VENV)/.bench-extra: $(BIN)/medic-check setup.cfg
	$(BIN)/pip install -q -e '.[test,bench]' --config-settings editable_mode=compat
	$(MAKE) --no-print-directory dev-links
	@touch $@

bench: testbed venv $(VENV)/.bench-extra
	$(BIN)/python tests/bench.py

# Its own virtualenv under PREFIX, executables in PREFIX/bin, not editable (docs/production.md).
install:
	bash deploy/install.sh "$(PREFIX)" "$(PYTHON)"
# chaos: docs/chaos.md. Brings up its own stack (Consul cluster + 3 hosts), tears it all down.
chaos: testbed venv
	$(BIN)/python tests/chaos.py --duration $(or $(DURATION),10m) --seed $(or $(SEED),1)

hosts-up: venv
	bash testbed/hosts.sh up $(or $(N),2)

hosts-down:
	bash testbed/hosts.sh down

consul-up: venv
	bash testbed/consul.sh up $(or $(MODE),dev)

consul-down:
	bash testbed/consul.sh down

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis *.egg-info build dist .testbed chaos-logs
