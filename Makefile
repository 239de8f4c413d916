# homelab.pixels developer entry points. Everything installs what it needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg

.PHONY: venv host site as-root test unit integration sanity bench build clean

# Virtualenv with ansible-core, the runtime libraries and the test tools; the
# repository is linked under .venv/collections so Ansible finds homelab.pixels.
$(BIN)/ansible-playbook: requirements.txt requirements-test.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip -r requirements-test.txt || { \
	  echo "make: pip could not install pip and requirements-test.txt (ansible-core, pylxd, molecule, ...)" \
	    "from PyPI. Check that this machine reaches PyPI, or set PIP_INDEX_URL to a mirror you reach;" \
	    "behind a proxy that inspects TLS, PIP_CERT=/path/to/its-ca.pem." >&2; exit 1; }
	mkdir -p $(VENV)/collections/ansible_collections/homelab
	ln -sfn $(CURDIR) $(VENV)/collections/ansible_collections/homelab/pixels
	touch $@

venv: $(BIN)/ansible-playbook

# Local Incus host: package, daemon, bridge, storage pool, local image.
host: venv
	ansible-playbook playbooks/incus_host.yml

# The main job: a ready Incus host, then the site playbook on the example homelab. A user that
# `make host` has just added to the Incus admin group has it from the next login on; until then
# site.yml runs under sg.
SITE_VARS ?= examples/homelab.yml
INCUS_GROUP ?= incus-admin
SITE_PLAY = ansible-playbook site.yml -e @$(SITE_VARS)
NEEDS_SG = $(if $(filter 0,$(shell id -u)),,$(if $(filter $(INCUS_GROUP),$(shell id -nG)),,yes))
site: host
	$(if $(NEEDS_SG),sg $(INCUS_GROUP) -c '$(SITE_PLAY)',$(SITE_PLAY))

unit: venv
	pytest tests/unit

integration: as-root host
	pytest tests/integration

sanity: venv
	tests/sanity.sh

# The suite loads nft tables, mounts pools and sets sysctls on this machine: it runs as root.
as-root:
	@[ "$$(id -u)" = 0 ] || { echo "make: the test suite changes this machine's firewall, mounts and sysctls" \
	  "and runs as root: sudo ./run test (or sudo make test)" >&2; exit 1; }

# The whole suite, as CI runs it.
test: as-root host
	pytest --durations=10 tests/unit tests/integration
	tests/sanity.sh
	ansible-galaxy collection build --force --output-path build/

# Every benchmark prints its figures next to a reference measured in the same run, and exits 1
# when it misses its target (--no-strict when run by hand only reports); all run, then make fails.
bench: host
	@failed=""; for b in tests/bench/bench_*.py; do $(BIN)/python $$b || failed="$$failed $$b"; done; \
	  if [ -n "$$failed" ]; then echo "make bench: a target was missed (or a bench failed) in:$$failed" >&2; exit 1; fi

build: venv
	ansible-galaxy collection build --force --output-path build/

clean:
	rm -rf build tests/output .pytest_cache collections
