"""The extension_state event source's rules, on its own clock: transitions, the attempt counts, the baseline, the
state file and its outbox, what an event may carry. (tests/integration/test_eda.py runs it in ansible-rulebook.)"""
import asyncio
import copy
import json
import importlib.util
import os
import stat
from pathlib import Path

import pytest

from ansible_collections.azure_vm.extensions.plugins.module_utils.extension_status import (
    extension_failed,
    extension_state,
)

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = ROOT / "extensions" / "eda" / "plugins" / "event_source" / "extension_state.py"


def load_plugin():
    """The plugin's globals, from its file as ansible-rulebook loads it (outside Ansible's plugin loader). Not
    runpy.run_path: under ansible-test units Ansible's collection finder is a path hook, and run_path would take the
    file for a package directory."""
    spec = importlib.util.spec_from_file_location("azure_vm_extensions_extension_state", str(PLUGIN))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return vars(module)


SOURCE = load_plugin()
SUB = "6f3a8c1e-0000-4000-8000-000000000001"


def options(**changes):
    values = SOURCE["validate_options"]({"state_file": "/nonexistent/state.json"})
    values.update(changes)
    return values


def vm(name="vm-1", power="running", agent=True, **extensions):
    """One observation as the reader makes it: extensions name -> state (or (state, type, message))."""
    exts = {}
    for ext_name, spec in extensions.items():
        default = (spec, "Microsoft.Azure.Extensions.CustomScript", "msg")
        state, ext_type, message = spec if isinstance(spec, tuple) else default
        exts[ext_name.lower()] = {"name": ext_name, "type": ext_type, "handler_version": "2.1.10", "state": state,
                                  "message": message}
    vm_id = "/subscriptions/%s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/%s" % (SUB, name)
    return {"key": vm_id.lower(), "vm_id": vm_id, "subscription_id": SUB, "resource_group": "rg", "location": "we",
            "power_state": power, "agent_ready": agent, "agent_message": "agent", "extensions": exts,
            "target": "vm", "vm_name": name}


def transitions(events):
    return [(e["azure_vm_extension"]["transition"], e["azure_vm_extension"]["extension"]) for e in events]


class Clock:
    def __init__(self):
        self.now = 1_800_000_000.0

    def poll(self, tracker, *observations, after=30):
        self.now += after
        return tracker.observe(SUB, list(observations), self.now)


def test_first_poll_is_a_baseline_and_what_was_wrong_then_is_not_reported():
    tracker, clock = SOURCE["Tracker"](options(agent_grace=0, retry_after=60)), Clock()
    wrong = vm("vm-1", agent=False, cs="failed")
    assert clock.poll(tracker, wrong, vm("vm-2", power="deallocated")) == []
    for dummy in range(5):  # well past retry_after and agent_grace: still nothing
        assert clock.poll(tracker, wrong, vm("vm-2", power="deallocated"), after=100) == []
    assert tracker.state["outbox"] == []


def test_without_baseline_the_first_poll_reports_what_is_wrong():
    tracker, clock = SOURCE["Tracker"](options(baseline=False, agent_grace=0)), Clock()
    events = clock.poll(tracker, vm("vm-1", agent=False, cs="failed"), vm("vm-2", power="deallocated", x="failed"))
    assert sorted(transitions(events)) == [("agent_not_ready", None), ("deallocated", None), ("failed", "cs")]


def test_failed_then_recovered_carries_ids_message_and_times_never_settings():
    tracker, clock = SOURCE["Tracker"](options()), Clock()
    clock.poll(tracker, vm(cs="succeeded"))
    (failed,) = clock.poll(tracker, vm(cs=("failed", "Microsoft.Azure.Extensions.CustomScript", "[stderr] boom")))
    body = failed["azure_vm_extension"]
    assert body == {
        "transition": "failed", "target": "vm", "subscription_id": SUB, "resource_group": "rg", "location": "we",
        "vm_id": "/subscriptions/%s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm-1" % SUB,
        "vm_name": "vm-1", "extension": "cs", "extension_type": "Microsoft.Azure.Extensions.CustomScript",
        "handler_version": "2.1.10", "handler_message": "[stderr] boom", "state": "failed",
        "previous_state": "succeeded", "state_since": "2027-01-15T08:01:00+00:00",
        "previous_since": "2027-01-15T08:00:30+00:00", "observed_at": "2027-01-15T08:01:00+00:00",
        "attempt": 1, "max_attempts": 3, "attempt_window": 3600}
    assert clock.poll(tracker, vm(cs="transitioning")) == []
    (recovered,) = clock.poll(tracker, vm(cs="succeeded"))
    assert transitions([recovered]) == [("recovered", "cs")]
    assert recovered["azure_vm_extension"]["reported_before"] == "failed"
    assert recovered["azure_vm_extension"]["previous_state"] == "transitioning"
    assert clock.poll(tracker, vm(cs="succeeded")) == []


def test_a_handler_that_stops_reporting_is_no_news():
    tracker, clock = SOURCE["Tracker"](options(retry_after=600)), Clock()
    clock.poll(tracker, vm(cs="succeeded"))
    assert transitions(clock.poll(tracker, vm(cs="failed"))) == [("failed", "cs")]
    assert clock.poll(tracker, vm(cs="unknown")) == []
    assert clock.poll(tracker, vm(cs="failed")) == []  # the same failure, not a new one
    assert transitions(clock.poll(tracker, vm(cs="unknown"), after=30)) == []
    assert transitions(clock.poll(tracker, vm(cs="succeeded"))) == [("recovered", "cs")]


def test_a_failing_handler_gets_max_attempts_then_one_escalation_per_window():
    tracker, clock = SOURCE["Tracker"](options(max_attempts=2, attempt_window=3600, retry_after=600)), Clock()
    clock.poll(tracker, vm(cs="succeeded"))
    attempts = []
    events = clock.poll(tracker, vm(cs="failed"))                   # t=60: failed, attempt 1
    attempts += events
    assert clock.poll(tracker, vm(cs="failed"), after=300) == []    # before retry_after: quiet
    attempts += clock.poll(tracker, vm(cs="failed"), after=300)     # t=660: still failed, attempt 2
    # A rerun the poll sees (transitioning, then failed) is the next attempt at once: here there is none left.
    clock.poll(tracker, vm(cs="transitioning"), after=30)
    attempts += clock.poll(tracker, vm(cs="failed"), after=30)      # t=720: escalated
    for dummy in range(4):
        attempts += clock.poll(tracker, vm(cs="failed"), after=600)  # t up to 3120: within the window, quiet
    assert [(e["azure_vm_extension"]["transition"], e["azure_vm_extension"]["attempt"]) for e in attempts] == [
        ("failed", 1), ("failed", 2), ("escalated", 2)]
    # Once the first attempt is older than the window, one attempt more is allowed, then escalation again.
    later = clock.poll(tracker, vm(cs="failed"), after=600)
    assert [(e["azure_vm_extension"]["transition"], e["azure_vm_extension"]["attempt"]) for e in later] == [
        ("failed", 2)]


def test_escalation_with_no_attempts_allowed():
    tracker, clock = SOURCE["Tracker"](options(max_attempts=0)), Clock()
    clock.poll(tracker, vm(cs="succeeded"))
    assert transitions(clock.poll(tracker, vm(cs="failed"))) == [("escalated", "cs")]
    assert clock.poll(tracker, vm(cs="failed"), after=5000) == []


def test_transitioning_too_long_follows_azure_handler_timeouts_per_type():
    tracker, clock = SOURCE["Tracker"](options()), Clock()
    monitor = ("transitioning", "Microsoft.Azure.Monitor.AzureMonitorLinuxAgent", None)
    script = ("transitioning", "Microsoft.Azure.Extensions.CustomScript", None)
    clock.poll(tracker, vm(mon="succeeded", cs="succeeded"))
    assert clock.poll(tracker, vm(mon=monitor, cs=script)) == []
    # 20 minutes for most handlers, 90 for CustomScript (the modules' defaults, seeds 000/002/004).
    assert transitions(clock.poll(tracker, vm(mon=monitor, cs=script), after=20 * 60)) == [
        ("transitioning_too_long", "mon")]
    assert transitions(clock.poll(tracker, vm(mon=monitor, cs=script), after=70 * 60)) == [
        ("transitioning_too_long", "cs")]
    assert clock.poll(tracker, vm(mon=monitor, cs=script), after=600) == []
    assert sorted(transitions(clock.poll(tracker, vm(mon="succeeded", cs="failed")))) == [
        ("failed", "cs"), ("recovered", "mon")]
    fixed = SOURCE["Tracker"](options(transitioning_timeout=60))
    clock.poll(fixed, vm(cs="succeeded"))
    clock.poll(fixed, vm(cs=script))
    assert transitions(clock.poll(fixed, vm(cs=script), after=60)) == [("transitioning_too_long", "cs")]


def test_agent_grace_and_a_vm_that_is_not_running():
    tracker, clock = SOURCE["Tracker"](options(agent_grace=120)), Clock()
    clock.poll(tracker, vm(cs="succeeded"))
    assert clock.poll(tracker, vm(agent=False, cs="succeeded"), after=60) == []
    assert clock.poll(tracker, vm(agent=False, cs="succeeded"), after=60) == []
    assert transitions(clock.poll(tracker, vm(agent=False, cs="succeeded"), after=60)) == [("agent_not_ready", None)]
    assert transitions(clock.poll(tracker, vm(agent=True, cs="succeeded"))) == [("agent_ready", None)]
    # A short blip within the grace is no event either way.
    assert clock.poll(tracker, vm(agent=False, cs="succeeded"), after=30) == []
    assert clock.poll(tracker, vm(agent=True, cs="succeeded"), after=30) == []
    # Deallocated: one event; what its instance view then says about handlers and agent is not taken as news.
    (event,) = clock.poll(tracker, vm(power="deallocated", agent=False, cs="failed"))
    assert event["azure_vm_extension"]["transition"] == "deallocated"
    assert event["azure_vm_extension"]["previous_state"] == "running"
    assert clock.poll(tracker, vm(power="deallocated", agent=False, cs="failed"), after=3000) == []
    assert clock.poll(tracker, vm(power="running", cs="succeeded")) == []


def test_new_vms_and_extensions_after_the_baseline_are_watched_and_gone_ones_forgotten():
    tracker, clock = SOURCE["Tracker"](options()), Clock()
    clock.poll(tracker, vm("vm-1", cs="succeeded"))
    assert transitions(clock.poll(tracker, vm("vm-1", cs="succeeded", new="failed"), vm("vm-2", x="failed"))) == [
        ("failed", "new"), ("failed", "x")]
    clock.poll(tracker, vm("vm-1", cs="succeeded"))
    assert list(tracker.state["vms"]) == [vm("vm-1")["key"]]
    assert list(tracker.state["vms"][vm("vm-1")["key"]]["extensions"]) == ["cs"]


def test_the_failed_rule_handler_or_provisioning_state():
    # The source uses the collection's one state word, whose "failed" is extension_status.extension_failed.
    observed = SOURCE["extension_state"]
    assert observed is extension_state
    failed = extension_failed
    assert failed(None, "failed") and failed("Failed", "unknown") and failed("failed", "succeeded")
    assert not failed("Succeeded", "succeeded") and not failed("Updating", "transitioning")
    pairs = (("unknown", "Failed"), ("succeeded", "Succeeded"), ("transitioning", None), ("unknown", "Creating"),
             ("unknown", None))
    assert [observed(*pair) for pair in pairs] == ["failed", "succeeded", "transitioning", "transitioning", "unknown"]


def test_a_scale_set_instance_extension_counts_arm_provisioning_failed():
    entry = {"id": "/subscriptions/%s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/ss/"
                   "virtualMachines/3" % SUB, "instanceId": "3", "location": "we",
             "properties": {"instanceView": {
                 "statuses": [{"code": "PowerState/running"}],
                 "vmAgent": {"statuses": [{"displayStatus": "Ready", "message": "ok"}]},
                 "extensions": [{"name": "mon", "type": "Microsoft.Azure.Monitor.AzureMonitorLinuxAgent",
                                 "statuses": [{"code": "ProvisioningState/succeeded", "message": "fine"}]}]}},
             "resources": [
                 {"name": "mon", "properties": {"provisioningState": "Succeeded"}},
                 {"name": "cs", "properties": {"provisioningState": "Failed", "publisher": "P", "type": "T"}}]}
    obs = SOURCE["vm_observation"](entry, SUB, 100, scale_set={"name": "ss"})
    assert (obs["target"], obs["vmss_name"], obs["instance_id"], obs["resource_group"]) == (
        "vmss_instance", "ss", "3", "rg")
    assert {name: ext["state"] for name, ext in obs["extensions"].items()} == {"mon": "succeeded", "cs": "failed"}
    assert obs["extensions"]["cs"]["type"] == "P.T"


def test_handler_messages_are_cut_and_cannot_be_templated():
    safe = SOURCE["safe_text"]
    text = "{{ lookup('pipe', 'id') }} {% if x %}{# c #}"
    assert safe(text, 100) == "{ { lookup('pipe', 'id') }} { % if x %}{ # c #}"
    assert safe("{{{{", 100) == "{ { { {"
    assert safe("x" * 30, 10) == "x" * 10 + " [cut: 20 more characters]"


@pytest.mark.parametrize("bad, words", [
    ({"interval": 0}, "interval must be greater than 0"),
    ({"max_attempts": -1}, "max_attempts must be 0 or more"),
    ({"max_attempts": 1.5}, "max_attempts must be a whole number"),
    ({"retry_after": "soon"}, "retry_after must be a number of seconds"),
    ({"baseline": "maybe"}, "baseline must be true or false"),
    ({"subscriptions": ["not-a-guid"]}, "subscriptions must be a list of subscription ids"),
    ({"resource_groups": "rg"}, "resource_groups must be a list"),
    ({"tags": {"env": ["a"]}}, "tags must be a mapping of tag names"),
    ({"intervall": 5}, "unknown option intervall; valid options: agent_grace, attempt_window"),
])
def test_bad_options_are_refused_naming_the_option(bad, words):
    with pytest.raises(SOURCE["OptionError"], match=words.replace("(", r"\(")):
        SOURCE["validate_options"](bad)


def test_state_file_round_trip_mode_lock_and_outbox_delivery(tmp_path):
    path = tmp_path / "eda" / "state.json"
    opts = options(state_file=str(path))
    source = SOURCE["ExtensionStateSource"](opts)
    source.state_file.acquire()
    assert source.state_file.load() is None
    tracker, clock = SOURCE["Tracker"](opts), Clock()
    clock.poll(tracker, vm(cs="succeeded"))
    clock.poll(tracker, vm(cs="failed", other="failed"))
    source.state_file.save(tracker.state)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    other = SOURCE["ExtensionStateSource"](opts)
    with pytest.raises(SOURCE["OptionError"], match="is in use by another process"):
        other.state_file.acquire()
    source.state_file.release()

    # A restart: the events saved but not delivered come first, each saved as delivered once it is on the queue.
    restarted = SOURCE["ExtensionStateSource"](opts)
    restarted.state_file.acquire()
    restarted.tracker = SOURCE["Tracker"](opts, restarted.state_file.load())
    assert restarted.tracker.state == json.loads(json.dumps(tracker.state))
    queue = []

    async def drain():
        while restarted.tracker.state["outbox"]:
            queue.append(copy.deepcopy(restarted.tracker.state["outbox"][0]))
            restarted.delivered()

    asyncio.run(drain())
    assert sorted(transitions(queue)) == [("failed", "cs"), ("failed", "other")]
    assert json.loads(path.read_text())["outbox"] == []
    # Reloaded again, nothing is reported twice and the attempt counts stand.
    again = SOURCE["Tracker"](opts, restarted.state_file.load())
    assert clock.poll(again, vm(cs="failed", other="failed"), after=60) == []
    events = clock.poll(again, vm(cs="failed", other="succeeded"), after=900)
    assert [(e["azure_vm_extension"]["transition"], e["azure_vm_extension"].get("attempt")) for e in events] == [
        ("failed", 2), ("recovered", None)]
    restarted.state_file.release()


def test_a_broken_state_file_is_refused_with_what_to_do(tmp_path):
    path = tmp_path / "state.json"
    path.write_text("{not json")
    with pytest.raises(SOURCE["OptionError"], match="not valid JSON .*move it away to start from a baseline"):
        SOURCE["StateFile"](str(path)).load()
    path.write_text(json.dumps({"version": 99}))
    with pytest.raises(SOURCE["OptionError"], match="unknown format"):
        SOURCE["StateFile"](str(path)).load()


RULEBOOKS = ROOT / "extensions" / "eda" / "rulebooks"


@pytest.mark.parametrize("name", ["self_heal.yml", "self_heal_controller.yml"])
def test_rulebooks_pass_ansible_rulebook_s_schema_and_condition_parser(name):
    """What ansible-rulebook checks when it loads a rulebook (its JSON schema, its condition grammar), without the
    Java runtime its rule engine needs; the source's options are the plugin's own."""
    import yaml
    from ansible_rulebook.condition_parser import parse_condition
    from ansible_rulebook.validators import Validate

    book = yaml.safe_load((RULEBOOKS / name).read_text())
    Validate.rulebook(book)
    (ruleset,) = book
    for rule in ruleset["rules"]:
        parse_condition(rule["condition"])
    (source,) = ruleset["sources"]
    args = source["azure_vm.extensions.extension_state"]
    assert set(args) <= set(SOURCE["OPTION_DEFAULTS"])
    transitions_handled = set()
    for rule in ruleset["rules"]:
        transitions_handled.update(t for t in SOURCE["TRANSITIONS"] if '"%s"' % t in rule["condition"])
    assert transitions_handled == set(SOURCE["TRANSITIONS"])


def test_the_controller_rulebook_watches_and_decides_as_the_cli_one():
    import yaml

    cli, controller = (yaml.safe_load((RULEBOOKS / name).read_text())[0]
                       for name in ("self_heal.yml", "self_heal_controller.yml"))
    assert cli["sources"] == controller["sources"]
    assert [rule["condition"] for rule in cli["rules"]] == [rule["condition"] for rule in controller["rules"]]
    assert ["run_playbook" in rule["action"] for rule in cli["rules"]] == [
        "run_job_template" in rule["action"] for rule in controller["rules"]]


def test_main_runs_reads_and_the_state_file_off_the_event_loop(tmp_path, monkeypatch):
    """ansible-rulebook's sources share one event loop: the blocking work (authentication, the polls' SDK calls, the
    state file) runs in a thread executor. Here a poll blocks until a coroutine on the loop releases it, which it
    could never do if the poll ran on the loop."""
    import threading

    base = SOURCE["ExtensionStateSource"]
    threads, release, polled = {}, threading.Event(), threading.Event()

    class Blocking(base):
        def start(self):
            threads["start"] = threading.get_ident()
            self.state_file.acquire()
            self.tracker = SOURCE["Tracker"](self.options, None)

        def poll(self, *pools):
            threads["poll"] = threading.get_ident()
            released = release.wait(60)
            tracker, now = self.tracker, SOURCE["time"].time()
            tracker.observe(SUB, [vm(cs="failed" if tracker.state["polls"] else "succeeded")], now)
            tracker.state["polls"] += 1
            self.state_file.save(tracker.state)
            threads["released"] = released
            polled.set()

        def delivered(self):
            threads["delivered"] = threading.get_ident()
            base.delivered(self)

    monkeypatch.setitem(SOURCE, "ExtensionStateSource", Blocking)
    events = []

    class Queue:
        async def put(self, event):
            events.append(event)

    async def scenario():
        threads["loop"] = threading.get_ident()
        source = asyncio.ensure_future(SOURCE["main"](Queue(), {"interval": 0.01, "state_file": str(tmp_path / "s")}))
        while not events:
            release.set()  # runs only because the loop is free while the poll waits in its thread
            await asyncio.sleep(0.01)
        source.cancel()
        with pytest.raises(asyncio.CancelledError):
            await source

    asyncio.run(scenario())
    assert threads["released"] is True
    assert {threads["start"], threads["poll"], threads["delivered"]}.isdisjoint({threads["loop"]})
    assert transitions(events[:1]) == [("failed", "cs")]
