# Two commands from a fresh clone: `make demo` and `make test`. Everything they need is installed from here.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv system-deps demo test sanity lint pytest bench bench-scale witness clean

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

sanity: venv
	bash tests/sanity.sh

lint: venv
	cd .build/collections/ansible_collections/azure_vm/extensions 2>/dev/null || $(PY) -c 'import sys; sys.path.insert(0, "tests"); import conftest; conftest.collections_path()'
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH ANSIBLE_COLLECTIONS_PATH=$(CURDIR)/.build/collections $(VENV)/bin/ansible-lint --offline roles playbooks

pytest: venv system-deps
	$(PY) -m pytest -n $${PYTEST_WORKERS:-auto} --dist loadgroup tests

test: venv system-deps sanity lint pytest

# Fleet benchmark against azure.azcollection (about 10 minutes; not part of `make test`): docs/benchmarks.md.
bench: venv
	$(PY) benchmarks/fleet_bench.py --vms 20 --extensions 2 --handler-seconds 10 --markdown docs/benchmarks.md

# Fleet at Azure's scale (2,000 VMs x 2 extensions, 5 simulated minutes per handler, the published throttling limits
# on a clock 5x real time, then half that scale; azure.azcollection on a 200-VM part): docs/benchmarks.md.
bench-scale: venv
	$(PY) benchmarks/bench_scale.py --vms 2000 --extensions 2 --handler-sim-s 300 --time-scale 5 --json .build/bench-scale.json --markdown docs/benchmarks.md

# Unmodified azure.azcollection 3.21.0 modules against the emulator (downloads the incumbent like `make bench`;
# not part of `make test`): docs/witness.md.
witness: venv
	$(PY) benchmarks/witness.py --markdown docs/witness.md

clean:
	rm -rf .build .pytest_cache
