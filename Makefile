# Two commands from a fresh clone: `make demo` and `make test`. Everything they need is installed from here.
# CI (`bash .ci/run`) runs `make test`, then `make ci-extra` (the other ends of the supported ranges, azure.azcollection,
# galaxy-importer).
# The main virtualenv: the system python3 (3.11), tests/requirements.txt's ansible-core, tests/constraints.txt's pins.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The ends of the supported ansible-core range (requirements.txt), each on a Python its controller supports
# (ansible-core's support matrix: 2.16 runs on Python 3.10-3.12, 2.20 and 2.21 on 3.12-3.14), taken from pyenv
# (tests/smoke/find_python.sh), so that make test's 3.11 and these cover every Python of the supported 3.11-3.13.
# Lowest: every `pkg>=X` of requirements.txt as `pkg==X`, ansible-core 2.16.0 included.
LOWEST_PYTHON := 3.12
LOWEST := .build/lowest
# Newest: the newest ansible-core release with the SDK pins of tests/constraints.txt.
NEWEST_PYTHON := 3.13
NEWEST_ANSIBLE_CORE := 2.21.5
NEWEST := .build/newest
# azure.azcollection as released in the ansible package, and one venv with azure.azcollection's requirements and this
# collection's; pip must also resolve them with the ansible package itself (ansible 14 needs ansible-core 2.21).
AZCOLLECTION_ANSIBLE := 14.5.0
AZCOLLECTION_PYTHON := 3.12
AZCOLLECTION := .build/azcollection
# galaxy-importer, what Galaxy runs on an uploaded tarball (its config .ci/galaxy-importer.cfg turns ansible-test off).
GALAXY_IMPORTER_VERSION := 0.4.44
GALAXY_IMPORTER := .build/galaxy-importer
DIST := .build/dist
COLLECTION_VERSION := $(shell sed -n 's/^version: *//p' galaxy.yml)
# `make emulator` options: a seed file (tests/emulator/seed.example.yml documents the format) and the port.
SEED ?=
PORT ?= 8443

.PHONY: venv system-deps demo emulator test sanity lint pytest units integration collection-build ee-context \
	de-context ci-extra guest-image-background test-lowest sanity-lowest test-newest sanity-newest test-azcollection \
	galaxy-importer changelog bench bench-inventory bench-scale bench-task-cost bench-eda witness clean

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

# ansible-lint as an editor or pre-commit runs it: at the root, no flags (.ansible-lint selects the production profile
# and says what it excludes and why).
lint: venv
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(VENV)/bin/ansible-lint

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
	rm -rf $(DIST)  # one tarball there, so README's `ansible-galaxy collection install .build/dist/*.tar.gz` is exact
	$(VENV)/bin/ansible-galaxy collection build --output-path $(DIST) .
	@echo "Install it with: ansible-galaxy collection install $(DIST)/azure_vm-extensions-$(COLLECTION_VERSION).tar.gz"

# The execution environment's build context (.build/ee/context) with this checkout's collection: docs/awx.md.
ee-context: venv
	$(PY) tests/ee/create_context.py --context .build/ee/context

# The decision environment's build context (.build/de/context) for EDA controller: docs/eda.md.
de-context: venv
	$(PY) tests/ee/create_context.py --file decision-environment.yml --context .build/de/context

# --- CI beyond `make test`: the other ends of every supported range, and the Azure CLI witness ------------------
ci-extra: test-lowest sanity-lowest test-newest sanity-newest test-azcollection galaxy-importer units witness-cli

# A venv per matrix entry, rebuilt when its Python or pins change (the stamp's name carries them).
$(LOWEST)/.installed-py$(LOWEST_PYTHON): requirements.txt
	py=$$(bash tests/smoke/find_python.sh $(LOWEST_PYTHON)) && rm -rf $(LOWEST) && $$py -m venv $(LOWEST)
	sed -n 's/^\([A-Za-z0-9_.-]*\)>=\([0-9.]*\).*/\1==\2/p' requirements.txt > $(LOWEST)/constraints.txt
	$(LOWEST)/bin/pip install -q --disable-pip-version-check -r requirements.txt -c $(LOWEST)/constraints.txt
	touch $@

$(NEWEST)/.installed-py$(NEWEST_PYTHON)-$(NEWEST_ANSIBLE_CORE): requirements.txt tests/constraints.txt
	py=$$(bash tests/smoke/find_python.sh $(NEWEST_PYTHON)) && rm -rf $(NEWEST) && $$py -m venv $(NEWEST)
	{ grep -v '^ansible-core==' tests/constraints.txt; echo ansible-core==$(NEWEST_ANSIBLE_CORE); } \
		> $(NEWEST)/constraints.txt
	$(NEWEST)/bin/pip install -q --disable-pip-version-check -r requirements.txt -c $(NEWEST)/constraints.txt
	touch $@

# Smoke playbook (every Azure module, twice) with the lowest ansible-core and SDKs requirements.txt allows.
test-lowest: venv $(LOWEST)/.installed-py$(LOWEST_PYTHON)
	$(PY) tests/smoke/run_smoke.py --venv $(LOWEST)

# ansible-test sanity with the lowest supported ansible-core, in the same venv.
sanity-lowest: venv $(LOWEST)/.installed-py$(LOWEST_PYTHON)
	SANITY_VENV=$(CURDIR)/$(LOWEST) bash tests/sanity.sh

# Smoke playbook with the newest ansible-core.
test-newest: venv $(NEWEST)/.installed-py$(NEWEST_PYTHON)-$(NEWEST_ANSIBLE_CORE)
	$(PY) tests/smoke/run_smoke.py --venv $(NEWEST)

# ansible-test sanity with the newest ansible-core, in the same venv.
sanity-newest: venv $(NEWEST)/.installed-py$(NEWEST_PYTHON)-$(NEWEST_ANSIBLE_CORE)
	SANITY_VENV=$(CURDIR)/$(NEWEST) bash tests/sanity.sh

# The ansible package's wheel once, its azure.azcollection (for its requirements.txt); then pip resolves the package
# with both collections' requirements (--dry-run: the resolution is the check; the package's own collections are not
# used here), and installs both requirements files.
$(AZCOLLECTION)/.installed-py$(AZCOLLECTION_PYTHON)-$(AZCOLLECTION_ANSIBLE): requirements.txt
	py=$$(bash tests/smoke/find_python.sh $(AZCOLLECTION_PYTHON)) && rm -rf $(AZCOLLECTION) \
		&& mkdir -p $(AZCOLLECTION)/dl && $$py -m venv $(AZCOLLECTION)/venv
	$(AZCOLLECTION)/venv/bin/pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
		ansible==$(AZCOLLECTION_ANSIBLE) -d $(AZCOLLECTION)/dl
	$(PY) tests/smoke/extract_azcollection.py $(AZCOLLECTION)/dl $(AZCOLLECTION)/collections
	$(AZCOLLECTION)/venv/bin/pip install -q --disable-pip-version-check --dry-run --find-links $(AZCOLLECTION)/dl \
		ansible==$(AZCOLLECTION_ANSIBLE) -r requirements.txt \
		-r $(AZCOLLECTION)/collections/ansible_collections/azure/azcollection/requirements.txt
	$(AZCOLLECTION)/venv/bin/pip install -q --disable-pip-version-check -r requirements.txt \
		-r $(AZCOLLECTION)/collections/ansible_collections/azure/azcollection/requirements.txt
	touch $@

# This collection and azure.azcollection in one venv (pip must resolve both requirements files), a module of each.
test-azcollection: venv $(AZCOLLECTION)/.installed-py$(AZCOLLECTION_PYTHON)-$(AZCOLLECTION_ANSIBLE)
	$(PY) tests/smoke/run_smoke.py --venv $(AZCOLLECTION)/venv --azcollection $(AZCOLLECTION)/collections

$(GALAXY_IMPORTER)/.installed-$(GALAXY_IMPORTER_VERSION):
	rm -rf $(GALAXY_IMPORTER) && python3 -m venv $(GALAXY_IMPORTER)
	$(GALAXY_IMPORTER)/bin/pip install -q --disable-pip-version-check galaxy-importer==$(GALAXY_IMPORTER_VERSION)
	touch $@

# galaxy-importer on the built tarball, as Galaxy runs it on upload; any warning or error fails.
galaxy-importer: collection-build $(GALAXY_IMPORTER)/.installed-$(GALAXY_IMPORTER_VERSION)
	$(PY) tests/smoke/run_galaxy_importer.py --importer $(GALAXY_IMPORTER) --config .ci/galaxy-importer.cfg \
		$(DIST)/azure_vm-extensions-$(COLLECTION_VERSION).tar.gz

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

# Inventory plugin benchmark (about 10 minutes, the static file most of it): 10,000 VMs in 5 subscriptions, cold,
# warm cache, list_model false, and a static YAML file with the same hosts, variables and groups, in one run.
bench-inventory: venv
	$(PY) benchmarks/inventory_bench.py --vms 10000 --subscriptions 5 --page-size 100 --breakdown --markdown docs/benchmarks.md

# Self-healing with ansible-rulebook (a few minutes): 1,000 VMs watched at a poll per 30 s, reads per poll, the time
# from a handler failure to its repair. Needs a Java 17 runtime: docs/benchmarks.md, docs/eda.md.
bench-eda: venv
	$(PY) benchmarks/eda_bench.py --vms 1000 --page-size 50 --interval 30 --failures 3 --markdown docs/benchmarks.md

clean:
	rm -rf .build .pytest_cache
