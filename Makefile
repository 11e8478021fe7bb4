# Two commands from a fresh clone: `make demo` and `make test`. Everything they need is installed from here.
# CI (`bash .ci/run`) runs `make test`, then `make ci-extra` (other ansible-core and SDK versions, azure.azcollection).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The lowest versions requirements.txt allows (every `pkg>=X` as `pkg==X`, ansible-core included), in their own venv.
LOWEST := .build/lowest
# azure.azcollection as released in the ansible package, and one venv with both collections' requirements.
AZCOLLECTION_ANSIBLE := 14.5.0
AZCOLLECTION := .build/azcollection
# `make emulator` options: a seed file (tests/emulator/seed.example.yml documents the format) and the port.
SEED ?=
PORT ?= 8443

.PHONY: venv system-deps demo emulator test sanity lint pytest units integration collection-build ee-context de-context \
	ci-extra guest-image-background test-lowest sanity-lowest test-azcollection changelog bench bench-inventory bench-scale bench-task-cost bench-eda witness clean

venv: $(STAMP)

$(STAMP): requirements.txt tests/requirements.txt tests/constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt -r tests/requirements.txt -c tests/constraints.txt
	touch $(STAMP)

# Debian packages the guest tests need (debootstrap, iproute2, ...); CI runs as root on Debian.
system-deps:
	bash tests/install-system-packages.sh

demo: venv
	$(PY) tests/demo.py

# The Azure emulator for your own playbooks, in the foreground (Ctrl-C stops it): prints the variables to export.
emulator: venv
	$(PY) tests/run_emulator.py --state-dir .build/emulator --port $(PORT) $(if $(SEED),--seed $(SEED))

sanity: venv
	bash tests/sanity.sh

lint: venv
	cd .build/collections/ansible_collections/azure_vm/extensions 2>/dev/null || $(PY) -c 'import sys; sys.path.insert(0, "tests"); import harness; harness.collections_path()'
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH ANSIBLE_COLLECTIONS_PATH=$(CURDIR)/.build/collections $(VENV)/bin/ansible-lint --offline roles playbooks extensions

pytest: venv system-deps
	$(PY) -m pytest -n $${PYTEST_WORKERS:-auto} --dist loadgroup tests --ignore=tests/guests
	# The real Debian guests on their own, after the rest: nothing else runs beside their sshd and namespaces.
	$(PY) -m pytest tests/guests

# ansible-test units and integration (tests/integration/targets, against the emulator) as contributors run them.
units: venv
	bash tests/ansible-test.sh units

integration: venv
	bash tests/ansible-test.sh integration

test: venv system-deps guest-image-background sanity lint integration pytest

# The Debian guest image (debootstrap: about 45 s, mostly downloads) is built in the background while sanity, lint
# and the other tests run. The guest tests take it from the cache, waiting on the build's lock; if this build
# failed they build it themselves (and skip with the reason when this machine cannot run guests).
guest-image-background: venv system-deps
	mkdir -p .build
	if [ "$$(id -u)" = 0 ]; then nohup $(PY) tests/guests/guestlib.py build > .build/guest-image.log 2>&1 & fi

# The collection tarball as Galaxy would get it (tests/integration/test_ecosystem.py checks its contents).
collection-build: venv
	$(VENV)/bin/ansible-galaxy collection build --force --output-path .build/dist .

# The execution environment's build context (.build/ee/context) with this checkout's collection: docs/awx.md.
ee-context: venv
	$(PY) tests/ee/create_context.py --context .build/ee/context

# The decision environment's build context (.build/de/context) for EDA controller: docs/eda.md.
de-context: venv
	$(PY) tests/ee/create_context.py --file decision-environment.yml --context .build/de/context

# --- CI beyond `make test`: the other end of every supported range -------------------------------------------
ci-extra: test-lowest sanity-lowest test-azcollection units witness-cli

$(LOWEST)/.installed: requirements.txt
	python3 -m venv $(LOWEST)
	sed -n 's/^\([A-Za-z0-9_.-]*\)>=\([0-9.]*\).*/\1==\2/p' requirements.txt > $(LOWEST)/constraints.txt
	$(LOWEST)/bin/pip install -q --disable-pip-version-check -r requirements.txt -c $(LOWEST)/constraints.txt
	touch $@

# Smoke playbook (every Azure module, twice) with the lowest ansible-core and SDKs requirements.txt allows.
test-lowest: venv $(LOWEST)/.installed
	$(PY) tests/smoke/run_smoke.py --venv $(LOWEST)

# ansible-test sanity with the lowest supported ansible-core.
sanity-lowest: venv
	SANITY_ANSIBLE_CORE=$$(grep -o '^ansible-core>=[0-9.]*' requirements.txt | sed 's/>=/==/') \
	SANITY_VENV=$(CURDIR)/.build/sanity-lowest bash tests/sanity.sh

$(AZCOLLECTION)/.installed: requirements.txt
	rm -rf $(AZCOLLECTION) && mkdir -p $(AZCOLLECTION)/dl
	$(PY) -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: --python-version 3.12 \
		ansible==$(AZCOLLECTION_ANSIBLE) -d $(AZCOLLECTION)/dl
	$(PY) tests/smoke/extract_azcollection.py $(AZCOLLECTION)/dl $(AZCOLLECTION)/collections
	python3 -m venv $(AZCOLLECTION)/venv
	$(AZCOLLECTION)/venv/bin/pip install -q --disable-pip-version-check -r requirements.txt \
		-r $(AZCOLLECTION)/collections/ansible_collections/azure/azcollection/requirements.txt
	touch $@

# This collection and azure.azcollection in one venv (pip must resolve both requirements files), a module of each.
test-azcollection: venv $(AZCOLLECTION)/.installed
	$(PY) tests/smoke/run_smoke.py --venv $(AZCOLLECTION)/venv --azcollection $(AZCOLLECTION)/collections

# CHANGELOG.rst from changelogs/fragments (antsibull-changelog). Fragments are kept (keep_fragments: true); running
# it again for the same version adds the fragments merged since.
changelog: venv
	$(PY) -c 'import sys; sys.path.insert(0, "tests"); import harness; harness.collections_path()'
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH ANSIBLE_COLLECTIONS_PATH=$(CURDIR)/.build/collections \
		$(VENV)/bin/antsibull-changelog lint
	cd .build/collections/ansible_collections/azure_vm/extensions && \
		PATH=$(CURDIR)/$(VENV)/bin:$$PATH ANSIBLE_COLLECTIONS_PATH=$(CURDIR)/.build/collections \
		$(CURDIR)/$(VENV)/bin/antsibull-changelog release --version $$(sed -n 's/^version: *//p' $(CURDIR)/galaxy.yml)

# Fleet benchmark against azure.azcollection (about 10 minutes; not part of `make test`): docs/benchmarks.md.
bench: venv
	$(PY) benchmarks/fleet_bench.py --vms 20 --extensions 2 --handler-seconds 10 --markdown docs/benchmarks.md

# Fleet at Azure's scale (2,000 VMs x 2 extensions, 5 simulated minutes per handler, the published throttling limits
# on a clock 5x real time, then half that scale; azure.azcollection on a 200-VM part): docs/benchmarks.md.
bench-scale: venv
	$(PY) benchmarks/bench_scale.py --vms 2000 --extensions 2 --handler-sim-s 300 --time-scale 5 --json .build/bench-scale.json --markdown docs/benchmarks.md

# Per-task cost of a single-VM module next to ansible.builtin.ping and azure.azcollection's (a few minutes).
bench-task-cost: venv
	$(PY) benchmarks/task_cost.py --tasks 15 --repeat 3 --markdown docs/benchmarks.md

# Unmodified azure.azcollection 3.21.0 modules against the emulator (downloads the incumbent like `make bench`;
# not part of `make test`): docs/witness.md.
witness: venv
	$(PY) benchmarks/witness.py --markdown docs/witness.md

# The Azure CLI, unmodified, runs the requirement documents' commands against the emulator (5 to 10 minutes; in
# ci-extra, not in `make test`): docs/witness.md. Its own venv, cached under .build/azure-cli.
.PHONY: witness-cli
AZURE_CLI_VERSION := 2.91.0
AZURE_CLI := .build/azure-cli
$(AZURE_CLI)/.installed-$(AZURE_CLI_VERSION):
	rm -rf $(AZURE_CLI)/venv && python3 -m venv $(AZURE_CLI)/venv
	$(AZURE_CLI)/venv/bin/pip install -q --disable-pip-version-check azure-cli==$(AZURE_CLI_VERSION)
	touch $@

witness-cli: venv $(AZURE_CLI)/.installed-$(AZURE_CLI_VERSION)
	$(PY) benchmarks/witness_cli.py --az $(AZURE_CLI)/venv/bin/az --markdown docs/witness.md

# Inventory plugin benchmark (a few minutes): requests and time for 2,000 VMs, cold and with the cache warm.
bench-inventory: venv
	$(PY) benchmarks/inventory_bench.py --vms 2000 --page-size 10 --page-size 100 --markdown docs/benchmarks.md

# Self-healing with ansible-rulebook (a few minutes): 1,000 VMs watched at a poll per 30 s, reads per poll, the time
# from a handler failure to its repair. Needs a Java 17 runtime: docs/benchmarks.md, docs/eda.md.
bench-eda: venv
	$(PY) benchmarks/eda_bench.py --vms 1000 --page-size 50 --interval 30 --failures 3 --markdown docs/benchmarks.md

clean:
	rm -rf .build .pytest_cache
