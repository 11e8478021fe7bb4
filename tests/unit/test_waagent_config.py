"""Unit tests for plugins/modules/waagent_config.py: the agent's parsing rules, the editor, validation, writes.

The module file is imported by path, so the collection does not need to be installed.
"""
import importlib.util
import json
import os
import re
import stat
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MODULE_PATH = REPO / "plugins" / "modules" / "waagent_config.py"


def _load():
    spec = importlib.util.spec_from_file_location("waagent_config_under_test", str(MODULE_PATH))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


wc = _load()


def agent_load(text):
    """A verbatim copy of the agent's ConfigurationProvider.load (azurelinuxagent/common/conf.py)."""
    values = {}
    for line in text.split('\n'):
        if not line.startswith("#") and "=" in line:
            parts = line.split('=', 1)
            if len(parts) < 2:
                continue
            key = parts[0].strip()
            value = parts[1].split('#')[0].strip("\" ").strip()
            values[key] = value if value != "None" else None
    return values


SAMPLE = """\
#
# Microsoft Azure Linux Agent Configuration
#

# Enable extension handling.
Extensions.Enabled=y

# Which provisioning agent to use.
Provisioning.Agent=cloud-init
 #Indented.Key=seen-by-the-agent
Logs.Verbose = n   # end of line comment
ResourceDisk.MountOptions=None
OS.OpensslPath="/usr/bin/openssl"
#HttpProxy.Host=None
#HttpProxy.Port=None
AutoUpdate.Enabled=n
Unmanaged.Key=keep me
AutoUpdate.Enabled=y
"""


# -- parsing --------------------------------------------------------------------------------------------------------

def test_effective_settings_match_the_agent_loader():
    assert wc.effective_settings(SAMPLE) == agent_load(SAMPLE)


def test_parsing_rules():
    values = wc.effective_settings(SAMPLE)
    assert values["#Indented.Key"] == "seen-by-the-agent"   # only column one starts a comment
    assert "HttpProxy.Host" not in values
    assert values["Logs.Verbose"] == "n"                     # cut at '#', stripped
    assert values["ResourceDisk.MountOptions"] is None       # literal None
    assert values["OS.OpensslPath"] == "/usr/bin/openssl"    # double quotes stripped
    assert values["AutoUpdate.Enabled"] == "y"               # last duplicate wins
    assert wc.effective_settings("A.B='x'\n")["A.B"] == "'x'"  # single quotes kept
    assert wc.effective_settings("Key=abc#def\n")["Key"] == "abc"


def test_keys_are_case_sensitive():
    values = wc.effective_settings("logs.verbose=y\nLogs.Verbose=n\n")
    assert values == {"logs.verbose": "y", "Logs.Verbose": "n"}


# -- editing --------------------------------------------------------------------------------------------------------

def test_no_change_is_a_round_trip():
    assert wc.edit_config(SAMPLE, {}, set()) == SAMPLE
    assert wc.edit_config(SAMPLE, {"Extensions.Enabled": "y", "Logs.Verbose": "n"}, set()) == SAMPLE
    assert wc.edit_config(SAMPLE, {"ResourceDisk.MountOptions": "None"}, set()) == SAMPLE


def test_set_keeps_comments_order_and_unmanaged_keys():
    after = wc.edit_config(SAMPLE, {"Provisioning.Agent": "waagent"}, set())
    assert after == SAMPLE.replace("Provisioning.Agent=cloud-init", "Provisioning.Agent=waagent")


def test_end_of_line_comment_and_spacing_are_kept():
    after = wc.edit_config(SAMPLE, {"Logs.Verbose": "y"}, set())
    assert "Logs.Verbose = y   # end of line comment\n" in after
    assert agent_load(after)["Logs.Verbose"] == "y"


def test_every_duplicate_is_replaced():
    after = wc.edit_config(SAMPLE, {"AutoUpdate.Enabled": "y"}, set())
    assert after.count("AutoUpdate.Enabled=y") == 2
    assert "AutoUpdate.Enabled=n" not in after


def test_indented_comment_is_a_different_key():
    after = wc.edit_config(SAMPLE, {"Indented.Key": "v"}, set())
    assert " #Indented.Key=seen-by-the-agent" in after
    assert agent_load(after)["Indented.Key"] == "v"


def test_new_key_goes_after_its_commented_example():
    after = wc.edit_config(SAMPLE, {"HttpProxy.Host": "proxy", "HttpProxy.Port": "3128"}, set())
    assert "#HttpProxy.Host=None\nHttpProxy.Host=proxy\n#HttpProxy.Port=None\nHttpProxy.Port=3128\n" in after


def test_new_key_without_example_is_appended():
    after = wc.edit_config(SAMPLE, {"ResourceDisk.SwapSizeMB": "2048"}, set())
    assert after == SAMPLE + "ResourceDisk.SwapSizeMB=2048\n"
    no_newline = wc.edit_config("A.B=1", {"C.D": "2"}, set())
    assert no_newline == "A.B=1\nC.D=2\n"
    assert wc.edit_config("", {"C.D": "2"}, set()) == "C.D=2\n"


def test_remove_drops_every_occurrence_but_not_comments():
    after = wc.edit_config(SAMPLE, {}, {"AutoUpdate.Enabled", "HttpProxy.Host"})
    assert "AutoUpdate.Enabled" not in after
    assert "#HttpProxy.Host=None" in after
    assert "AutoUpdate.Enabled" not in agent_load(after)


def test_crlf_lines():
    text = "Logs.Verbose=n\r\nExtensions.Enabled=y\r\n"
    after = wc.edit_config(text, {"Logs.Verbose": "y"}, set())
    assert after == "Logs.Verbose=y\r\nExtensions.Enabled=y\r\n"
    assert agent_load(after)["Logs.Verbose"] == "y"


# -- validation -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value,expected", [
    (True, "y"), (False, "n"), ("yes", "y"), ("no", "n"), ("y", "y"), ("N", "n"), ("on", "y"), ("off", "n"),
    ("true", "y"), ("False", "n"), (1, "y"), (0, "n"), ("None", "None"),
])
def test_booleans_are_written_as_y_or_n(value, expected):
    assert wc.normalize_value("Logs.Verbose", value) == (expected, None)


@pytest.mark.parametrize("value", ["maybe", "", 2, "2", [True], {"a": 1}])
def test_bad_booleans(value):
    with pytest.raises(wc.ValidationError) as err:
        wc.normalize_value("ResourceDisk.EnableSwap", value)
    msg = str(err.value)
    assert "ResourceDisk.EnableSwap" in msg and repr(value) in msg and "y or n" in msg


@pytest.mark.parametrize("value,expected", [(2048, "2048"), ("2048", "2048"), (" 10 ", "10"), (-1, "-1"),
                                            ("None", "None")])
def test_integers(value, expected):
    assert wc.normalize_value("ResourceDisk.SwapSizeMB", value)[0] == expected


@pytest.mark.parametrize("value", ["ten", "1.5", 1.5, True, "0x10", ""])
def test_bad_integers(value):
    with pytest.raises(wc.ValidationError) as err:
        wc.normalize_value("ResourceDisk.SwapSizeMB", value)
    assert "ResourceDisk.SwapSizeMB" in str(err.value) and "an integer" in str(err.value)


@pytest.mark.parametrize("key,value,allowed", [
    ("Provisioning.Agent", "systemd", "auto, waagent, cloud-init, disabled"),
    ("Provisioning.Agent", "Auto", "auto, waagent, cloud-init, disabled"),
    ("Provisioning.SshHostKeyPairType", "ed448", "rsa, dsa, ecdsa, ed25519, auto"),
    ("Provisioning.PasswordCryptId", 7, "1, 2a, 5, 6"),
    ("Protocol.EndpointDiscovery", "dns", "dhcp, static"),
])
def test_enumerations(key, value, allowed):
    with pytest.raises(wc.ValidationError) as err:
        wc.normalize_value(key, value)
    msg = str(err.value)
    assert key in msg and repr(value) in msg and allowed in msg


def test_enumeration_values_accepted():
    assert wc.normalize_value("Provisioning.PasswordCryptId", 6)[0] == "6"
    assert wc.normalize_value("Provisioning.PasswordCryptId", "2a")[0] == "2a"
    assert wc.normalize_value("Provisioning.Agent", "cloud-init")[0] == "cloud-init"
    assert wc.normalize_value("Protocol.EndpointDiscovery", "static")[0] == "static"


@pytest.mark.parametrize("value", ["a#b", "two\nlines", " padded", '"quoted"', ""])
def test_strings_the_agent_would_mangle_are_refused(value):
    with pytest.raises(wc.ValidationError):
        wc.normalize_value("ResourceDisk.MountOptions", value)


def test_strings():
    assert wc.normalize_value("ResourceDisk.MountOptions", "nodev,nosuid")[0] == "nodev,nosuid"
    assert wc.normalize_value("HttpProxy.Host", "proxy.example.com")[0] == "proxy.example.com"
    with pytest.raises(wc.ValidationError):
        wc.normalize_value("HttpProxy.Host", True)


def test_unknown_keys():
    with pytest.raises(wc.ValidationError) as err:
        wc.normalize_value("Foo.Bar", "x")
    assert "allow_unknown" in str(err.value)
    assert wc.normalize_value("Foo.Bar", "x", allow_unknown=True) == ("x", None)
    assert wc.normalize_value("Foo.Bar", True, allow_unknown=True) == ("y", None)
    with pytest.raises(wc.ValidationError) as err:
        wc.normalize_value("logs.verbose", "y")
    assert "did you mean Logs.Verbose" in str(err.value)
    with pytest.raises(wc.ValidationError) as err:
        wc.normalize_value("AutoUpdate.Frequency", 3600)
    assert "Autoupdate.Frequency" in str(err.value)


@pytest.mark.parametrize("key", ["Provisioning.Enabled", "LBProbeResponder", "Role.StateConsumer",
                                 "CGroups.EnforceLimits", "Provisioning.UseCloudInit"])
def test_dead_keys_are_accepted_with_a_warning(key):
    value = "None" if key.startswith("Role.") else "y"
    text, warning = wc.normalize_value(key, value)
    assert text == value
    assert "deprecated" in warning and key in warning


@pytest.mark.parametrize("key", ["#Key", " Key", "Key=x", "Key\n", ""])
def test_bad_key_names(key):
    with pytest.raises(wc.ValidationError):
        wc.normalize_value(key, "x", allow_unknown=True)


def test_plan_collects_every_error_and_handles_none():
    with pytest.raises(wc.ValidationError) as err:
        wc.plan({"Logs.Verbose": "maybe", "Provisioning.Agent": "x", "OS.SshDir": "/etc/ssh"}, [], False)
    assert "Logs.Verbose" in str(err.value) and "Provisioning.Agent" in str(err.value)
    updates, removals, warnings = wc.plan({"Logs.Verbose": True, "HttpProxy.Host": None}, ["LBProbeResponder"],
                                          False)
    assert updates == {"Logs.Verbose": "y"}
    assert removals == {"HttpProxy.Host", "LBProbeResponder"}
    assert warnings == []
    with pytest.raises(wc.ValidationError):
        wc.plan({"Logs.Verbose": True}, ["Logs.Verbose"], False)
    dummy, dummy, warnings = wc.plan({"AutoUpdate.Enabled": False}, [], False)
    assert any("AutoUpdate.Enabled=n" in w for w in warnings)


def test_schema_covers_every_option_of_the_reference():
    reference = Path(__file__).resolve().parents[1] / "data" / "reference" / "waagent.md"  # tests/data/README.md
    expected = {
        "OS.AllowHTTP": wc.BOOL, "OS.EnableFirewall": wc.BOOL, "Logs.Collect": wc.BOOL,
        "Extensions.WaitForCloudInit": wc.BOOL, "AutoUpdate.UpdateToLatestVersion": wc.BOOL,
        "EnableOverProvisioning": wc.BOOL, "ResourceDisk.EnableSwapEncryption": wc.BOOL, "DetectScvmmEnv": wc.BOOL,
        "Lib.Dir": wc.STR, "OS.RootDeviceScsiTimeout": wc.STR, "Policy.PolicyFilePath": wc.STR,
        "AutoUpdate.GAFamily": wc.STR, "Extensions.WaitForCloudInitTimeout": wc.INT,
        "OS.EnableFirewallPeriod": wc.INT, "Autoupdate.Frequency": wc.INT, "Logs.CollectPeriod": wc.INT,
        "HttpProxy.Port": wc.INT, "Provisioning.PasswordCryptSaltLength": wc.INT,
    }
    for key, kind in expected.items():
        assert wc.SCHEMA[key][0] == kind, key
    names = set(re.findall(r"\b([A-Z][A-Za-z]+\.[A-Z][A-Za-z]+)\b", reference.read_text()))
    names = {n for n in names if not n.startswith(("Debug.", "Role.")) and "." in n}
    ignore = {"WALinuxAgent.Version"}
    missing = sorted(n for n in names - ignore if wc.lookup(n) is None and n[0].isupper()
                     and n.split(".")[0] in {"OS", "Logs", "Extensions", "Provisioning", "ResourceDisk",
                                             "AutoUpdate", "HttpProxy", "Lib", "DVD", "Pid", "Extension",
                                             "Policy", "Protocol", "Autoupdate", "CGroups", "Network"})
    assert len(names) > 40  # the table was read
    assert missing == []


# -- files ----------------------------------------------------------------------------------------------------------

def test_atomic_write_keeps_mode_and_replaces_the_inode(tmp_path):
    path = tmp_path / "waagent.conf"
    path.write_text("A.B=1\n")
    os.chmod(str(path), 0o600)
    inode = path.stat().st_ino
    wc.write_atomic(str(path), "A.B=2\n")
    assert path.read_text() == "A.B=2\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.stat().st_ino != inode
    assert [p.name for p in tmp_path.iterdir()] == ["waagent.conf"]


def test_atomic_write_creates_with_0644(tmp_path):
    path = tmp_path / "new.conf"
    wc.write_atomic(str(path), "A.B=1\n")
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


# -- the module, in process -----------------------------------------------------------------------------------------

def run_module(args, check_mode=False, diff=False):
    from ansible.module_utils.testing import patch_module_args
    args = dict(args)
    if check_mode:
        args["_ansible_check_mode"] = True
    if diff:
        args["_ansible_diff"] = True
    with patch_module_args(args):
        with pytest.raises(SystemExit):
            wc.main()


def result(capsys):
    return json.loads(capsys.readouterr().out)


def test_module_sets_and_is_idempotent(tmp_path, capsys):
    path = tmp_path / "waagent.conf"
    path.write_text(SAMPLE)
    run_module({"path": str(path), "settings": {"Logs.Verbose": True, "ResourceDisk.SwapSizeMB": 512}})
    out = result(capsys)
    assert out["changed"] is True
    assert out["settings"]["Logs.Verbose"] == "y"
    assert out["settings"]["ResourceDisk.SwapSizeMB"] == "512"
    assert agent_load(path.read_text()) == out["settings"]
    run_module({"path": str(path), "settings": {"Logs.Verbose": "yes", "ResourceDisk.SwapSizeMB": "512"}})
    assert result(capsys)["changed"] is False


def test_module_check_mode_and_diff(tmp_path, capsys):
    path = tmp_path / "waagent.conf"
    path.write_text(SAMPLE)
    run_module({"path": str(path), "settings": {"Provisioning.Agent": "disabled"}}, check_mode=True, diff=True)
    out = result(capsys)
    assert out["changed"] is True
    assert out["diff"]["before"] == SAMPLE
    assert "Provisioning.Agent=disabled" in out["diff"]["after"]
    assert out["settings"]["Provisioning.Agent"] == "disabled"
    assert path.read_text() == SAMPLE


def test_module_invalid_value_leaves_the_file_untouched(tmp_path, capsys):
    path = tmp_path / "waagent.conf"
    path.write_text(SAMPLE)
    before = path.stat().st_mtime_ns
    run_module({"path": str(path), "settings": {"Logs.Verbose": True, "Provisioning.Agent": "systemd"}})
    out = result(capsys)
    assert out["failed"] is True
    assert "Provisioning.Agent" in out["msg"] and "'systemd'" in out["msg"]
    assert "auto, waagent, cloud-init, disabled" in out["msg"]
    assert path.read_text() == SAMPLE and path.stat().st_mtime_ns == before


def test_module_follows_a_symlink(tmp_path, capsys):
    target = tmp_path / "waagent.conf.sles"
    target.write_text(SAMPLE)
    link = tmp_path / "waagent.conf"
    link.symlink_to(target.name)
    run_module({"path": str(link), "settings": {"ResourceDisk.Filesystem": "btrfs"}})
    out = result(capsys)
    assert out["changed"] is True
    assert out["path"] == str(target)
    assert link.is_symlink()
    assert "ResourceDisk.Filesystem=btrfs" in target.read_text()


def test_module_warns_on_dead_keys_and_removes(tmp_path, capsys):
    path = tmp_path / "waagent.conf"
    path.write_text(SAMPLE)
    run_module({"path": str(path), "settings": {"Provisioning.Enabled": "n", "Unmanaged.Key": None},
                "remove": ["AutoUpdate.Enabled"]})
    out = result(capsys)
    assert "Provisioning.Enabled is deprecated" in json.dumps(out["warnings"])
    text = path.read_text()
    assert "Unmanaged.Key" not in text and "AutoUpdate.Enabled" not in text
    assert "Provisioning.Enabled=n" in text
