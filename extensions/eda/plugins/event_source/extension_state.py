# -*- coding: utf-8 -*-
# Copyright: azure_vm.extensions contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""ansible-rulebook event source azure_vm.extensions.extension_state: Azure VM extension and agent transitions.

ansible-rulebook loads this file with runpy and calls ``main(queue, args)`` (the event-source plugin interface of
ansible-rulebook's docs/sources.rst, "Plugin entrypoint"; ansible.eda's url_check and range are pollers of the
same shape). Everything blocking (the SDK pipeline, the state file) runs in a thread executor.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
short_description: Events when an Azure VM extension fails, recovers or hangs, a VM agent stops, a VM is deallocated
description:
  - Watches the VMs of one or more subscriptions (optionally only some resource groups, or VMs with some tags, and
    the instances of Uniform scale sets) and puts one event on the rulebook's queue per state transition of an
    extension or of a VM agent, never one per poll.
  - "Reads per poll and subscription: the List All C(statusOnly=true) pages, ceil(VMs / page size) requests that
    return every VM's instance view with its agent's and extensions' statuses (Compute's High Cost Get VM policy:
    300 a minute per subscription). With O(include_vmss_instances), also the scale-set list and one paged instance
    list (C($expand=instanceView)) per Uniform scale set. With O(tags), also the model list (the only list that
    carries tags) once every O(tags_refresh) seconds. Every request goes through the collection's throttling
    scheduler (the published ARM and Compute budgets, corrected by Azure's remaining-budget headers, Retry-After
    honoured)."
  - "Transitions (C(event.azure_vm_extension.transition)): V(failed) (an extension's handler reports failure, or its
    ARM provisioning state is Failed where the list carries it: scale-set instances), V(escalated) (it is failed
    again and O(max_attempts) failed events were already sent within O(attempt_window)), V(recovered) (succeeded
    after V(failed), V(escalated) or V(transitioning_too_long)), V(transitioning_too_long), V(agent_not_ready),
    V(agent_ready) (after V(agent_not_ready)), V(deallocated)."
  - A failed extension that stays failed is reported again O(retry_after) seconds after its last V(failed) event,
    as the next attempt (C(attempt) counts them); after O(max_attempts) attempts in O(attempt_window) the next one
    is an V(escalated) event instead, once. These counts are kept in O(state_file), so a restart neither repeats
    nor forgets them.
  - The first poll of a subscription is a baseline (O(baseline)); what later polls find is compared with it.
  - Events carry ids (VM id, subscription, resource group, VM or scale set and instance), the extension's name,
    type and handler version, the handler's status messages, and timestamps. Never settings, protected settings,
    tags or credentials. Jinja delimiters in handler messages are broken up (C({{) becomes C({ {)), because
    ansible-rulebook hands the event to playbooks as extra vars, which Ansible templates.
version_added: 0.1.0
options:
  subscriptions:
    description: Subscription ids to watch. Empty watches the authentication's subscription (O(subscription_id)).
    type: list
    elements: str
    default: []
  resource_groups:
    description: Only VMs (and scale sets) in these resource groups, case-insensitive. Empty means all.
    type: list
    elements: str
    default: []
  tags:
    description:
      - Only VMs (and scale sets) that carry every one of these tags; a V(null) or empty value matches any value.
      - Costs the model list every O(tags_refresh) seconds (statusOnly lists carry no tags).
    type: dict
    default: {}
  tags_refresh:
    description: Seconds between two reads of the VM model list when O(tags) is set.
    type: int
    default: 600
  include_vmss_instances:
    description: Also watch the instances of Uniform scale sets (Flexible scale sets' VMs are VMs and are watched).
    type: bool
    default: false
  interval:
    description: Seconds from the start of one poll to the start of the next.
    type: float
    default: 30
  state_file:
    description:
      - Where the last seen states, the attempt counts and the events not yet delivered are kept (JSON, mode
        0600). One file per rulebook activation; a second process on the same file is refused.
      - Empty means C(~/.ansible/azure_vm_extensions/eda/extension_state.json).
    type: path
    default: ""
  baseline:
    description:
      - V(true) makes the first poll of a subscription (no state for it in O(state_file)) a baseline, with no
        events. V(false) reports what is wrong at once (failed extensions, agents not ready, deallocated VMs).
    type: bool
    default: true
  max_attempts:
    description: V(failed) events per extension within O(attempt_window); the next one is V(escalated).
    type: int
    default: 3
  attempt_window:
    description: Seconds over which O(max_attempts) counts.
    type: int
    default: 3600
  retry_after:
    description: Seconds after a V(failed) event before an extension that is still failed is reported again.
    type: int
    default: 900
  transitioning_timeout:
    description:
      - Seconds an extension may stay transitioning before V(transitioning_too_long).
      - V(0) uses Azure's handler timeouts, as the modules do (90 minutes for CustomScript, Chef and DSC, 20 for
        others).
    type: int
    default: 0
  agent_grace:
    description: Seconds a running VM's agent must stay not ready before V(agent_not_ready).
    type: int
    default: 120
  message_max_chars:
    description: Handler messages longer than this are cut (events stay small).
    type: int
    default: 2000
  auth_source:
    description: As the modules' O(auth_source) (C(azure_vm.extensions.azure) doc fragment); E(AZURE_*) variables.
    type: str
    default: auto
  subscription_id:
    description: As the modules' O(subscription_id); E(AZURE_SUBSCRIPTION_ID).
    type: str
  client_id:
    description: As the modules' O(client_id).
    type: str
  secret:
    description: As the modules' O(secret); never logged or put into an event.
    type: str
  tenant:
    description: As the modules' O(tenant).
    type: str
  cloud_environment:
    description: As the modules' O(cloud_environment); E(AZURE_CLOUD_ENVIRONMENT).
    type: str
  ca_bundle:
    description: As the modules' O(ca_bundle); E(AZURE_CA_BUNDLE), E(REQUESTS_CA_BUNDLE).
    type: path
notes:
  - Needs the collection's Python requirements (C(requirements.txt)) in the Python that runs ansible-rulebook.
  - The other auth options of the modules (O(profile), O(x509_certificate_path), O(cert_password),
    O(disable_instance_discovery)) are accepted too.
  - See the collection's C(docs/eda.md) for the event's fields and the C(self_heal) rulebook.
"""

EXAMPLES = r"""
- name: Self-heal Azure VM extensions
  hosts: localhost
  sources:
    - name: extension_state
      azure_vm.extensions.extension_state:
        subscriptions: ["00000000-0000-0000-0000-000000000001"]
        resource_groups: [rg-web]
        interval: 30
        state_file: /var/lib/eda/azure_extension_state.json
        max_attempts: 3
        attempt_window: 3600
  rules:
    - name: Rerun a failed extension
      condition: event.azure_vm_extension.transition == "failed"
      action:
        run_playbook:
          name: azure_vm.extensions.self_heal
"""

import asyncio
import datetime
import errno
import json
import logging
import os
import re
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

try:
    import fcntl
except ImportError:  # not on POSIX: no lock, the docs say one process per state file
    fcntl = None


def _collection_imports():
    """The collection's module_utils. ansible-rulebook runs this file with runpy.run_path, outside Ansible's
    collection loader, so the collections directory that holds this file is put on sys.path when
    ``ansible_collections.azure_vm.extensions`` is not importable yet."""
    try:
        import ansible_collections.azure_vm.extensions.plugins.module_utils.client  # noqa: F401
    except ImportError:
        here = os.path.abspath(os.path.dirname(__file__))
        # .../ansible_collections/azure_vm/extensions/extensions/eda/plugins/event_source
        root = here
        for dummy in range(7):
            root = os.path.dirname(root)
        if root not in sys.path:
            sys.path.insert(0, root)


_collection_imports()

# The one place this plugin reaches into the collection (docs/architecture.md: it stands beside the modules and
# the inventory plugin, above module_utils).
from ansible_collections.azure_vm.extensions.plugins.module_utils.arm import parse_resource_id  # noqa: E402
from ansible_collections.azure_vm.extensions.plugins.module_utils.auth import (  # noqa: E402
    AZURE_AUTH_ARGSPEC,
    validate_auth_options,
)
from ansible_collections.azure_vm.extensions.plugins.module_utils.client import AzureConnection  # noqa: E402
from ansible_collections.azure_vm.extensions.plugins.module_utils.errors import (  # noqa: E402
    AzureAuthError,
    AzureError,
    describe_azure_error,
)
from ansible_collections.azure_vm.extensions.plugins.module_utils.extension_model import default_timeout  # noqa: E402
from ansible_collections.azure_vm.extensions.plugins.module_utils.extension_status import (  # noqa: E402
    extension_state,
    handler_state,
    power_state,
    status_messages,
    vm_agent_result,
)

LOG = logging.getLogger("azure_vm.extensions.extension_state")

EVENT_KEY = "azure_vm_extension"
STATE_VERSION = 1
DEFAULT_STATE_FILE = "~/.ansible/azure_vm_extensions/eda/extension_state.json"
# Virtual Machines - List All with statusOnly=true, and the scale-set lists, at a published Compute api-version
# that has statusOnly (the one module_utils/fleet_pipeline.py sweeps with).
API_VERSION = "2024-07-01"
# What ARM accepts (Microsoft.Resources naming rules), as the inventory plugin checks them.
SUBSCRIPTION_PATTERN = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
RESOURCE_GROUP_PATTERN = re.compile(r"^[-\w\._\(\)]{0,89}[-\w_\(\)]$", re.UNICODE)
TRANSITIONS = ("failed", "escalated", "recovered", "transitioning_too_long", "agent_not_ready", "agent_ready",
               "deallocated")

OPTION_DEFAULTS = dict(
    subscriptions=[], resource_groups=[], tags={}, tags_refresh=600, include_vmss_instances=False, interval=30.0,
    state_file="", baseline=True, max_attempts=3, attempt_window=3600, retry_after=900, transitioning_timeout=0,
    agent_grace=120, message_max_chars=2000,
)
INT_OPTIONS = ("tags_refresh", "max_attempts", "attempt_window", "retry_after", "transitioning_timeout",
               "agent_grace", "message_max_chars")
POSITIVE_OPTIONS = ("tags_refresh", "attempt_window", "retry_after", "message_max_chars")


class OptionError(ValueError):
    """An argument that cannot work; raised before any request."""


# ---- text ---------------------------------------------------------------------------------------------------------
def safe_text(text, limit):
    """A handler's message as an event may carry it: cut to limit, Jinja delimiters broken up ('{{' -> '{ {')."""
    text = text or ""
    if len(text) > limit:
        text = text[:limit] + " [cut: %d more characters]" % (len(text) - limit)
    for opener in ("{{", "{%", "{#"):
        while opener in text:
            text = text.replace(opener, opener[0] + " " + opener[1])
    return text


def iso(timestamp):
    return datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc).isoformat(timespec="seconds")


# ---- options ------------------------------------------------------------------------------------------------------
def validate_options(args):
    """The source's options with defaults, checked before anything is read; raises OptionError naming the option."""
    known = set(OPTION_DEFAULTS) | set(AZURE_AUTH_ARGSPEC)
    # ansible-rulebook adds its feedback queue to the arguments of sources that use one.
    unknown = sorted(key for key in args if key not in known and not key.startswith("eda_"))
    if unknown:
        raise OptionError("azure_vm.extensions.extension_state: unknown option%s %s; valid options: %s" % (
            "s" if len(unknown) > 1 else "", ", ".join(unknown), ", ".join(sorted(known))))
    options = dict(OPTION_DEFAULTS)
    options.update((key, value) for key, value in args.items() if key in OPTION_DEFAULTS and value is not None)

    def fail(option, what, value):
        raise OptionError("azure_vm.extensions.extension_state: %s must be %s, got %r" % (option, what, value))

    for option in ("subscriptions", "resource_groups"):
        if not isinstance(options[option], list):
            fail(option, "a list", options[option])
    for value in options["subscriptions"]:
        if not isinstance(value, str) or not SUBSCRIPTION_PATTERN.match(value):
            fail("subscriptions", "a list of subscription ids (GUIDs)", value)
    for value in options["resource_groups"]:
        if not isinstance(value, str) or not RESOURCE_GROUP_PATTERN.match(value):
            fail("resource_groups", "a list of resource group names (1-90 letters, digits, _ ( ) - . ; not ending "
                 "with a period)", value)
    if not isinstance(options["tags"], dict) or any(
            not isinstance(key, str) or not (value is None or isinstance(value, (str, int, float)))
            for key, value in options["tags"].items()):
        fail("tags", "a mapping of tag names to a value or null (any value)", options["tags"])
    for option in ("include_vmss_instances", "baseline"):
        value = options[option]
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no"):
            value = value.lower() in ("true", "yes")
        if not isinstance(value, bool):
            fail(option, "true or false", options[option])
        options[option] = value
    for option in INT_OPTIONS + ("interval",):
        value = options[option]
        try:
            if isinstance(value, bool):
                raise ValueError(value)
            number = float(value)
        except (TypeError, ValueError):
            fail(option, "a number of seconds" if option != "max_attempts" else "a whole number", value)
        if option in INT_OPTIONS:
            if number != int(number):
                fail(option, "a whole number", value)
            number = int(number)
        minimum_positive = option in POSITIVE_OPTIONS or option == "interval"
        if number < 0 or (minimum_positive and number <= 0):
            fail(option, "greater than 0" if minimum_positive else "0 or more", value)
        options[option] = number
    if not isinstance(options["state_file"], str):
        fail("state_file", "a path", options["state_file"])
    options["state_file"] = os.path.expanduser(os.path.expandvars(options["state_file"] or DEFAULT_STATE_FILE))
    # An empty auth option (a rulebook variable left empty) falls back to its AZURE_* variable, as if not given.
    options["auth"] = dict((key, args.get(key)) for key in AZURE_AUTH_ARGSPEC if args.get(key) not in (None, ""))
    return options


# ---- what one poll sees -------------------------------------------------------------------------------------------
def extension_observations(instance_view, resources, limit):
    """name (lower) -> {name, type, handler_version, state, message} from an instance view and, where the list has
    them (scale-set instances), the extension resources with their ARM provisioning states."""
    provisioning = dict(((ext.get("name") or "").lower(), (ext.get("properties") or {}).get("provisioningState"))
                        for ext in resources or [])
    types = dict(((ext.get("name") or "").lower(), "%s.%s" % (
        (ext.get("properties") or {}).get("publisher"), (ext.get("properties") or {}).get("type")))
        for ext in resources or [] if (ext.get("properties") or {}).get("type"))
    found = {}
    for view in (instance_view or {}).get("extensions") or []:
        name = view.get("name")
        if not name:
            continue
        handler = handler_state(view.get("statuses"))
        found[name.lower()] = {
            "name": name, "type": view.get("type") or types.get(name.lower()),
            "handler_version": view.get("typeHandlerVersion"),
            "state": extension_state(handler, provisioning.get(name.lower())),
            "message": safe_text(status_messages(view), limit) or None,
        }
    for name, state in provisioning.items():
        # An extension the agent has not reported on: ARM's provisioning state alone (Failed counts as failed).
        if name and name not in found:
            original = [ext.get("name") for ext in resources if (ext.get("name") or "").lower() == name][0]
            found[name] = {"name": original, "type": types.get(name), "handler_version": None,
                           "state": extension_state("unknown", state), "message": None}
    return found


def vm_observation(entry, subscription_id, limit, scale_set=None):
    """What one statusOnly VM entry (or one scale-set instance with its instance view) says."""
    ids = parse_resource_id(entry.get("id"))
    view = (entry.get("properties") or {}).get("instanceView") or {}
    agent = vm_agent_result(view)
    observation = {
        "key": (entry.get("id") or "").lower(),
        "vm_id": entry.get("id"),
        "subscription_id": subscription_id,
        "resource_group": ids.get("resourcegroups"),
        "location": entry.get("location"),
        "power_state": power_state(view),
        "agent_ready": bool(agent["ready"]),
        "agent_message": safe_text(agent.get("message") or agent.get("status") or "", limit) or None,
        "extensions": extension_observations(view, entry.get("resources") if scale_set else None, limit),
    }
    if scale_set is None:
        observation.update(target="vm", vm_name=entry.get("name"))
    else:
        observation.update(target="vmss_instance", vmss_name=scale_set.get("name"),
                           instance_id=entry.get("instanceId") or ids.get("virtualmachines"))
    return observation


# ---- the state machine --------------------------------------------------------------------------------------------
class Tracker(object):
    """Last seen states, attempt counts and undelivered events (the outbox), as kept in the state file.

    Pure: observe() turns one poll's observations into events and updates the state; nothing here reads Azure or
    the clock by itself, so the unit tests drive it with their own times.
    """

    def __init__(self, options, state=None):
        self.options = options
        self.state = state or {"version": STATE_VERSION, "baselined": [], "vms": {}, "outbox": [], "polls": 0}

    # -- one poll ------------------------------------------------------------------------------------------------
    def observe(self, subscription_id, observations, now):
        """Events (appended to the outbox) for one subscription's poll. The first poll of a subscription is a
        baseline when the options say so."""
        sub = subscription_id.lower()
        baseline = self.options["baseline"] and sub not in self.state["baselined"]
        vms = self.state["vms"]
        seen = set()
        events = []
        for obs in observations:
            seen.add(obs["key"])
            record = vms.get(obs["key"])
            if record is None:
                record = vms[obs["key"]] = self._new_record(obs, now)
                if baseline:
                    self._baseline(record, obs, now)
                    continue
            self._refresh_ids(record, obs)
            events.extend(self._vm_events(record, obs, now))
        # VMs of this subscription that are gone: forget them (nothing to repair).
        for key in [key for key, record in vms.items() if record["subscription_id"].lower() == sub and key not in seen]:
            del vms[key]
        if sub not in self.state["baselined"]:
            self.state["baselined"].append(sub)
        self.state["outbox"].extend(events)
        return events

    @staticmethod
    def _new_record(obs, now):
        keys = ("vm_id", "subscription_id", "resource_group", "location", "target", "vm_name", "vmss_name",
                "instance_id")
        record = dict((key, obs.get(key)) for key in keys)
        record.update(power={"state": None, "since": now}, agent={"ready": None, "since": now, "reported": False},
                      extensions={})
        return record

    @staticmethod
    def _refresh_ids(record, obs):
        for key in ("vm_id", "resource_group", "location", "vm_name", "vmss_name", "instance_id"):
            if obs.get(key):
                record[key] = obs[key]

    def _baseline(self, record, obs, now):
        record["power"] = {"state": obs["power_state"], "since": now}
        # An agent already not ready at the baseline is part of the baseline: no agent_not_ready (nor agent_ready).
        record["agent"] = {"ready": obs["agent_ready"], "since": now, "reported": False,
                           "baseline": not obs["agent_ready"]}
        for key, ext in obs["extensions"].items():
            record["extensions"][key] = self._new_extension(ext, now)

    @staticmethod
    def _new_extension(ext, now):
        return {"name": ext["name"], "type": ext["type"], "state": ext["state"], "since": now, "reported": None,
                "attempts": [], "last_failed_event": None, "escalated_at": None}

    def _vm_events(self, record, obs, now):
        events = []
        power = record["power"]
        if obs["power_state"] != power["state"]:
            previous = power["state"]
            previous_since = power["since"]
            record["power"] = power = {"state": obs["power_state"], "since": now}
            if obs["power_state"] == "deallocated":
                events.append(self._event(record, "deallocated", now, state="deallocated", previous_state=previous,
                                          state_since=now, previous_since=previous_since))
        if obs["power_state"] != "running":
            # A stopped or deallocated VM's agent and handlers say nothing new: their last states stand.
            return events
        events.extend(self._agent_events(record, obs, now))
        extensions = record["extensions"]
        for key in [key for key in extensions if key not in obs["extensions"]]:
            del extensions[key]  # removed: nothing to watch
        for key, ext in obs["extensions"].items():
            tracked = extensions.get(key)
            if tracked is None:
                tracked = extensions[key] = self._new_extension(dict(ext, state=None), now)
            events.extend(self._extension_events(record, tracked, ext, now))
        return events

    def _agent_events(self, record, obs, now):
        agent = record["agent"]
        if obs["agent_ready"] != agent["ready"]:
            previous = None if agent["ready"] is None else ("ready" if agent["ready"] else "not_ready")
            record["agent"] = agent = {"ready": obs["agent_ready"], "since": now, "reported": agent["reported"],
                                       "previous": previous, "previous_since": agent["since"]}
        if not agent["ready"] and not agent["reported"] and not agent.get("baseline") \
                and now - agent["since"] >= self.options["agent_grace"]:
            agent["reported"] = True
            return [self._event(record, "agent_not_ready", now, state="not_ready", previous_state=agent.get("previous"),
                                state_since=agent["since"], previous_since=agent.get("previous_since"),
                                handler_message=obs["agent_message"])]
        if agent["ready"] and agent["reported"]:
            agent["reported"] = False
            return [self._event(record, "agent_ready", now, state="ready", previous_state="not_ready",
                                state_since=agent["since"], previous_since=agent.get("previous_since"),
                                handler_message=obs["agent_message"])]
        return []

    def _extension_events(self, record, tracked, ext, now):
        opts = self.options
        if ext["state"] == "unknown" and tracked["state"] is not None:
            # No status from the handler (an agent restarting, a status not yet reported): no news, the last
            # known state stands, so failed -> unknown -> failed is not a new failure.
            return []
        previous, previous_since = tracked["state"], tracked["since"]
        changed = ext["state"] != previous
        if changed:
            tracked.update(state=ext["state"], since=now, previous=previous, previous_since=previous_since)
        tracked["type"] = ext["type"] or tracked.get("type")
        details = dict(extension=ext["name"], extension_type=ext["type"], handler_version=ext["handler_version"],
                       handler_message=ext["message"], state=ext["state"], previous_state=tracked.get("previous"),
                       state_since=tracked["since"], previous_since=tracked.get("previous_since"))
        state = ext["state"]
        if state == "failed":
            due = changed or (tracked["last_failed_event"] is not None
                              and now - tracked["last_failed_event"] >= opts["retry_after"])
            if not due:
                return []
            window_start = now - opts["attempt_window"]
            tracked["attempts"] = [t for t in tracked["attempts"] if t > window_start]
            if len(tracked["attempts"]) < opts["max_attempts"]:
                tracked["attempts"].append(now)
                tracked.update(last_failed_event=now, reported="failed")
                return [self._event(record, "failed", now, attempt=len(tracked["attempts"]),
                                    max_attempts=opts["max_attempts"], attempt_window=opts["attempt_window"],
                                    **details)]
            tracked["last_failed_event"] = now  # the next check is one retry_after from here
            if tracked["escalated_at"] is not None and (
                    not tracked["attempts"] or tracked["escalated_at"] >= tracked["attempts"][-1]):
                return []  # escalated once since the last attempt: quiet until an attempt is due or it recovers
            tracked.update(escalated_at=now, reported="escalated")
            return [self._event(record, "escalated", now, attempt=len(tracked["attempts"]),
                                max_attempts=opts["max_attempts"], attempt_window=opts["attempt_window"],
                                **details)]
        if state == "succeeded":
            if tracked["reported"] in ("failed", "escalated", "transitioning_too_long"):
                before = tracked["reported"]
                tracked.update(reported=None, last_failed_event=None, escalated_at=None)
                return [self._event(record, "recovered", now, reported_before=before,
                                    attempts_in_window=len(tracked["attempts"]), **details)]
            return []
        if state == "transitioning":
            limit = opts["transitioning_timeout"] or default_timeout(
                (ext["type"] or tracked.get("type") or "").rpartition(".")[2])
            if tracked["reported"] != "transitioning_too_long" and now - tracked["since"] >= limit:
                tracked["reported"] = "transitioning_too_long"
                return [self._event(record, "transitioning_too_long", now, timeout_s=limit, **details)]
        return []

    @staticmethod
    def _event(record, transition, now, **details):
        body = {"transition": transition, "target": record["target"], "vm_id": record["vm_id"],
                "subscription_id": record["subscription_id"], "resource_group": record["resource_group"],
                "location": record["location"]}
        if record["target"] == "vm":
            body["vm_name"] = record["vm_name"]
        else:
            body.update(vmss_name=record["vmss_name"], instance_id=record["instance_id"])
        body.setdefault("extension", None)
        body.update(details)
        for key in ("state_since", "previous_since"):
            if isinstance(body.get(key), (int, float)):
                body[key] = iso(body[key])
        body["observed_at"] = iso(now)
        return {EVENT_KEY: body}


# ---- the state file ---------------------------------------------------------------------------------------------
class StateFile(object):
    """The JSON state file: written atomically (a temporary file renamed over it), mode 0600 in a 0700 directory,
    and locked for the life of the source so that two processes never share it."""

    def __init__(self, path):
        self.path = path
        self._lock = None

    def acquire(self):
        directory = os.path.dirname(self.path) or "."
        if not os.path.isdir(directory):
            os.makedirs(directory, mode=0o700)
        if fcntl is None:
            return
        self._lock = open(self.path + ".lock", "a")
        try:
            fcntl.flock(self._lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            self._lock.close()
            self._lock = None
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise OptionError("azure_vm.extensions.extension_state: state_file %s is in use by another process; "
                                  "give each rulebook activation its own state_file" % self.path)
            raise

    def release(self):
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def load(self):
        try:
            with open(self.path) as handle:
                state = json.load(handle)
        except IOError as exc:
            if exc.errno == errno.ENOENT:
                return None
            raise
        except ValueError as exc:
            raise OptionError("azure_vm.extensions.extension_state: state_file %s is not valid JSON (%s); move it "
                              "away to start from a baseline" % (self.path, exc))
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            raise OptionError("azure_vm.extensions.extension_state: state_file %s has an unknown format (version %r,"
                              " expected %d)" % (self.path, state.get("version") if isinstance(state, dict) else None,
                                                 STATE_VERSION))
        return state

    def save(self, state):
        directory = os.path.dirname(self.path) or "."
        handle, temporary = tempfile.mkstemp(prefix=".extension_state.", dir=directory)
        try:
            with os.fdopen(handle, "w") as out:
                json.dump(state, out, sort_keys=True, separators=(",", ":"))
                out.flush()
                os.fsync(out.fileno())
            os.chmod(temporary, 0o600)
            os.replace(temporary, self.path)
        except BaseException:
            if os.path.exists(temporary):
                os.unlink(temporary)
            raise


# ---- reading Azure ------------------------------------------------------------------------------------------------
class FleetReader(object):
    """The cheapest reads: per subscription the List All statusOnly pages, optionally the scale-set list and each
    Uniform scale set's instance list, and the model list every tags_refresh seconds when tags filter. Every
    request goes through the connection's pipeline: credential, retries with Retry-After, the throttling
    scheduler (one scheduler and one token for all subscriptions)."""

    def __init__(self, options, clock=time.time):
        self.options = options
        self.clock = clock
        self.connections = []
        self.tags_by_vm = {}
        self.tags_read_at = None
        self.pages = 0

    def connect(self):
        try:
            # pacing: the source's lists share the subscription's read budget with everyone else's
            connection = AzureConnection(validate_auth_options(self.options["auth"], "auth options"), pacing=True)
        except AzureAuthError as exc:
            raise OptionError("azure_vm.extensions.extension_state: %s" % exc.msg)
        try:
            connection.get_token()
        except AzureError as exc:
            raise OptionError("azure_vm.extensions.extension_state: no usable Azure credentials (auth_source=%s): %s"
                              % (connection.auth_source, exc))
        for subscription in self.options["subscriptions"] or [connection.subscription_id]:
            # Same credential, endpoints and throttling scheduler; only the SDK clients' subscription differs.
            self.connections.append(connection.for_subscription(subscription))

    def _pages(self, connection, path, query):
        items = []
        for page in connection.list_pages("compute", path, query):
            self.pages += 1
            items.extend(page)
        return items

    def _wanted(self, resource_id, tags):
        groups = set(group.lower() for group in self.options["resource_groups"])
        if groups and (parse_resource_id(resource_id).get("resourcegroups") or "").lower() not in groups:
            return False
        for key, value in self.options["tags"].items():
            if tags is None or key not in tags or (value not in (None, "") and str(tags[key]) != str(value)):
                return False
        return True

    def read(self, connection, pool):
        """(subscription id, observations) of one subscription; raises AzureError on a failed list. pool runs the
        lists (not the subscriptions: a subscription waiting on its lists must never hold their workers)."""
        sub = connection.subscription_id
        base = "/subscriptions/%s/providers/Microsoft.Compute" % sub
        limit = self.options["message_max_chars"]
        status = pool.submit(self._pages, connection, base + "/virtualMachines",
                             {"api-version": API_VERSION, "statusOnly": "true"})
        scale_sets = pool.submit(self._pages, connection, base + "/virtualMachineScaleSets",
                                 {"api-version": API_VERSION}) if self.options["include_vmss_instances"] else None
        now = self.clock()
        stale = self.tags_read_at is None or now - self.tags_read_at >= self.options["tags_refresh"]
        if self.options["tags"] and stale:
            models = self._pages(connection, base + "/virtualMachines", {"api-version": API_VERSION})
            self.tags_by_vm = dict(((vm.get("id") or "").lower(), vm.get("tags") or {}) for vm in models)
            self.tags_read_at = now
        observations = []
        for entry in status.result():
            tags = self.tags_by_vm.get((entry.get("id") or "").lower(), {}) if self.options["tags"] else None
            if self._wanted(entry.get("id"), tags if self.options["tags"] else {}):
                observations.append(vm_observation(entry, sub, limit))
        if scale_sets is not None:
            lists = []
            for scale_set in scale_sets.result():
                mode = ((scale_set.get("properties") or {}).get("orchestrationMode") or "Uniform").lower()
                if mode != "uniform" or not self._wanted(scale_set.get("id"), scale_set.get("tags") or {}):
                    continue
                lists.append((scale_set, pool.submit(
                    self._pages, connection, "%s/virtualMachines" % scale_set["id"],
                    {"api-version": API_VERSION, "$expand": "instanceView"})))
            for scale_set, instances in lists:
                observations.extend(vm_observation(entry, sub, limit, scale_set) for entry in instances.result())
        return sub, observations

    def poll(self, subscriptions_pool, lists_pool):
        """[(subscription id, observations or None, error text or None)] for every subscription."""
        futures = [(connection, subscriptions_pool.submit(self.read, connection, lists_pool))
                   for connection in self.connections]
        results = []
        for connection, future in futures:
            try:
                results.append(future.result() + (None,))
            except AzureError as exc:
                results.append((connection.subscription_id, None, describe_azure_error(
                    exc, "listing the VMs of subscription", connection.subscription_id)))
        return results


# ---- the event source -----------------------------------------------------------------------------------------------
class ExtensionStateSource(object):
    def __init__(self, options, clock=time.time):
        self.options = options
        self.clock = clock
        self.reader = FleetReader(options, clock)
        self.state_file = StateFile(options["state_file"])
        self.tracker = None

    def start(self):
        """Blocking: lock and load the state file, authenticate."""
        self.state_file.acquire()
        self.tracker = Tracker(self.options, self.state_file.load())
        self.reader.connect()

    def poll(self, subscriptions_pool, lists_pool):
        """Blocking: one poll of every subscription, the tracker updated and the state (with its outbox) saved."""
        results = self.reader.poll(subscriptions_pool, lists_pool)
        now = self.clock()
        for subscription, observations, error in results:
            if error:
                LOG.warning("azure_vm.extensions.extension_state: %s; the next poll tries again", error)
                continue
            baseline = self.options["baseline"] and subscription.lower() not in self.tracker.state["baselined"]
            events = self.tracker.observe(subscription, observations, now)
            if baseline:
                LOG.info("azure_vm.extensions.extension_state: baseline of subscription %s: %d VMs",
                         subscription, len(observations))
            elif events:
                LOG.info("azure_vm.extensions.extension_state: %d transitions in subscription %s",
                         len(events), subscription)
        state = self.tracker.state
        state["polls"] = state.get("polls", 0) + 1
        state["last_poll"] = iso(now)
        state["pages_read"] = self.reader.pages
        self.state_file.save(state)

    def delivered(self):
        """Blocking: drop the first outbox event (it is on the queue) and save."""
        self.tracker.state["outbox"].pop(0)
        self.state_file.save(self.tracker.state)


async def main(queue, args):
    """ansible-rulebook's entry point: poll every `interval` seconds, put one event per transition on the queue."""
    options = validate_options(dict(args or {}))
    # ansible-rulebook -v sets the root logger to INFO: azure-core would then log every request and response of
    # every poll. Its warnings stay (unless the azure logger was configured on purpose).
    azure_logger = logging.getLogger("azure")
    if azure_logger.level == logging.NOTSET:
        azure_logger.setLevel(logging.WARNING)
    source = ExtensionStateSource(options)
    loop = asyncio.get_running_loop()
    # The SDK pipeline and the state file block: they run here, never on the event loop.
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="extension_state")
    subscriptions_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="extension_state_subscription")
    lists_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="extension_state_list")
    try:
        await loop.run_in_executor(executor, source.start)
        while True:
            started = time.monotonic()
            # Events a previous run (or poll) saved but did not deliver go first; each is saved as delivered
            # right after it is on the queue, so a restart repeats at most the one in between.
            while source.tracker.state["outbox"]:
                await queue.put(source.tracker.state["outbox"][0])
                await asyncio.sleep(0)
                await loop.run_in_executor(executor, source.delivered)
            await loop.run_in_executor(executor, source.poll, subscriptions_pool, lists_pool)
            while source.tracker.state["outbox"]:
                await queue.put(source.tracker.state["outbox"][0])
                await asyncio.sleep(0)
                await loop.run_in_executor(executor, source.delivered)
            await asyncio.sleep(max(options["interval"] - (time.monotonic() - started), 0))
    finally:
        for pool in (lists_pool, subscriptions_pool, executor):
            pool.shutdown(wait=False)
        source.state_file.release()


if __name__ == "__main__":
    # Standalone: print the events (ansible-rulebook's docs suggest this for trying a source by hand).
    class PrintQueue(object):
        async def put(self, event):
            print(json.dumps(event))

    logging.basicConfig(level=logging.INFO)
    asyncio.run(main(PrintQueue(), {"interval": float(os.environ.get("INTERVAL", "30"))}))
