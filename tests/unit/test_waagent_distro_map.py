"""The waagent role's per-distribution variables against the package/service/config table of the reference.

The role loads vars/main.yml, then vars/<os_family>.yml, then vars/<distribution>.yml (later wins); this test
applies the same order to the ansible_facts each distribution reports.
"""
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
VARS = REPO / "roles" / "waagent" / "vars"
# The reference (a copy of public facts in the repository; sources: tests/data/README.md).
REFERENCE = REPO / "tests" / "data" / "reference" / "waagent.md"

# The table of waagent.md, as the role must implement it (checked against the reference below).
TABLE = {
    "Ubuntu": ("walinuxagent", "walinuxagent", "/etc/waagent.conf"),
    "Debian": ("waagent", "walinuxagent", "/etc/waagent.conf"),
    "RHEL, Alma, Rocky, Oracle": ("WALinuxAgent", "waagent", "/etc/waagent.conf"),
    "SUSE": ("python-azure-agent", "waagent", "/etc/waagent.conf"),
    "Azure Linux / Mariner": ("WALinuxAgent", "waagent", "/etc/waagent.conf"),
}

# reference family -> (os_family, distribution) pairs as ansible-core's distribution facts report them
FACTS = {
    "Ubuntu": [("Debian", "Ubuntu")],
    "Debian": [("Debian", "Debian")],
    "RHEL, Alma, Rocky, Oracle": [("RedHat", "RedHat"), ("RedHat", "AlmaLinux"), ("RedHat", "Rocky"),
                                  ("RedHat", "OracleLinux"), ("RedHat", "CentOS")],
    "SUSE": [("Suse", "SLES"), ("Suse", "openSUSE Leap")],
    "Azure Linux / Mariner": [("Mariner", "Mariner"), ("Azurelinux", "Azurelinux")],
}


def load(name):
    path = VARS / name
    if not path.is_file():
        return {}
    return yaml.safe_load(path.read_text()) or {}


def role_vars(os_family, distribution):
    merged = dict(load("main.yml"))
    merged.update(load(os_family + ".yml"))
    merged.update(load(distribution + ".yml"))
    return merged


def reference_table():
    rows = {}
    for line in REFERENCE.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0] in TABLE:
            package = re.sub(r"\s*\(.*\)", "", cells[1]).strip()
            config = cells[3].split()[0]
            rows[cells[0]] = (package, cells[2], config)
    return rows


def test_reference_table_matches_the_copy():
    assert reference_table() == TABLE


@pytest.mark.parametrize("family", sorted(TABLE))
def test_distribution_mapping(family):
    package, service, config = reference_table()[family]
    for os_family, distribution in FACTS[family]:
        merged = role_vars(os_family, distribution)
        assert merged["__waagent_package"] == package, (os_family, distribution)
        assert merged["__waagent_service"] == service, (os_family, distribution)
        assert merged["__waagent_config_path"] == config, (os_family, distribution)


def test_every_vars_file_defines_the_same_keys():
    keys = set(load("main.yml"))
    assert keys == {"__waagent_package", "__waagent_service", "__waagent_config_path", "__waagent_executable"}
    for path in VARS.glob("*.yml"):
        assert set(load(path.name)) == keys, path.name


def test_defaults_keep_auto_update_on():
    defaults = yaml.safe_load((REPO / "roles" / "waagent" / "defaults" / "main.yml").read_text())
    assert defaults["waagent_config_defaults"]["AutoUpdate.Enabled"] is True
    assert defaults["waagent_connectivity_check"] is False
    assert defaults["waagent_manage_service"] is True
    assert all(name.startswith("waagent_") for name in defaults)


def test_argument_specs_document_every_default():
    defaults = yaml.safe_load((REPO / "roles" / "waagent" / "defaults" / "main.yml").read_text())
    specs = yaml.safe_load((REPO / "roles" / "waagent" / "meta" / "argument_specs.yml").read_text())
    options = specs["argument_specs"]["main"]["options"]
    assert set(options) == set(defaults)
    for name, spec in options.items():
        assert spec.get("type"), name
        assert spec.get("description"), name
        assert spec.get("default") == defaults[name], name
