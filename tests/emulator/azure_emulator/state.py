"""The emulated world: subscriptions, VMs, scale sets, catalogue, features, plus faults, settings and the log.

Everything lives in one State object guarded by one lock; the HTTP threads take the lock for each request,
which is cheap because no handler does I/O while holding it. Time-dependent behaviour (handlers running,
features registering) is stored as start/end timestamps and resolved lazily when read, so nothing needs
background timers and the outcome of a run is fixed the moment it starts (deterministic tests).
"""
import copy
import hashlib
import hmac
import json
import os
import re
import threading
import uuid


DEFAULT_SETTINGS = {
    "handler_duration_s": 1.0,
    "delete_duration_s": 0.5,
    "feature_registration_s": 2.0,
    "provider_registration_s": 1.0,
    # The "window" throttle model's per-subscription budgets: 1200 writes and 12000 reads per hour.
    "throttle": {"writes": 1200, "reads": 12000, "window_s": 3600.0},
    "page_size": 10,
    # True: feature and provider registrations stay in their transitional state (Registering, Unregistering)
    # until it is set back to false, so tests hold a state instead of racing the clock.
    "hold_registrations": False,
    # throttling.py: "azure" (ARM's and Compute's published token buckets), "window" (`throttle`) or "off".
    "throttle_model": "azure",
    # Simulated seconds per real second: buckets, Retry-After, handler/delete/registration durations.
    "time_scale": 1.0,
    # Retry-After in fractions of a second (azure-core parses floats) instead of Azure's whole seconds.
    "fractional_retry_after": False,
}
THROTTLE_MODELS = ("azure", "window", "off")
UNIFORM, FLEXIBLE = "Uniform", "Flexible"
ORCHESTRATION_MODES = (UNIFORM, FLEXIBLE)
# Rolling upgrades on a Flexible scale set need the Application Health extension (tests/data/flexible-scale-sets.md)
HEALTH_EXTENSION_TYPES = ("applicationhealthlinux", "applicationhealthwindows")

ARM_AUDIENCE = "https://management.azure-emulator.local/"


class SeedError(ValueError):
    """The seed file is not what seed.example.yml documents."""


def stable_id(*parts):
    """A deterministic GUID for a resource (vmId, principal ids): same seed, same ids."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "/".join(str(p).lower() for p in parts)))


class HandlerRun:
    """One execution of an extension handler on one VM or scale-set instance.

    end is None for a handler that never finishes (the `timeout` fault). `message` is the final status message
    already shaped the way the real handler reports it.
    """

    def __init__(self, start, end, outcome, message, kind="Creating", stdout="", stderr="", version=None):
        self.start, self.end, self.outcome, self.message = start, end, outcome, message
        self.kind, self.stdout, self.stderr = kind, stdout, stderr
        # The handler version this run installed (None: the newest the catalogue allows, read when shown).
        self.version = version
        # When ARM gives up on a handler that never finishes (VM extensions: handlers.handler_timeout_s); None =
        # never (scale-set instances keep the older model: their operation stays in progress).
        self.deadline = None

    def finished(self, now):
        return self.end is not None and now >= self.end

    def timed_out(self, now):
        """ARM marked the run Failed at its deadline; the handler itself still reports transitioning."""
        return self.end is None and self.deadline is not None and now >= self.deadline

    def provisioning_state(self, now):
        if self.timed_out(now):
            return "Failed"
        if not self.finished(now):
            return self.kind
        return "Succeeded" if self.outcome == "succeeded" else "Failed"


class Extension:
    """An extension as the VM (or scale-set instance) holds it: public properties plus the last handler run."""

    def __init__(self, name, props, run, location=None, tags=None, protected=None, version=0):
        self.name = name
        self.props = props          # ARM-shaped public properties (publisher, type, typeHandlerVersion, settings...)
        self.run = run
        self.location = location
        self.tags = tags
        # Protected settings are never stored: only a keyed digest (State.protected_digest), enough to tell
        # whether a write changes them (which reruns the handler), or None when there are none.
        self.protected = protected
        self.deleting_until = None  # set while a DELETE is in progress
        self.version = version      # scale-set model version in which this definition last changed

    @property
    def has_protected(self):
        return self.protected is not None

    def definition(self):
        """What the handler runs with: a write that leaves this unchanged does not rerun the handler."""
        return json.dumps(self.props, sort_keys=True), self.protected


class VM:
    def __init__(self, sub, rg, name, location, os_type, power_state, agent_status, agent_version):
        self.sub, self.rg, self.name, self.location = sub, rg, name, location
        self.os_type, self.power_state = os_type, power_state
        self.agent_status, self.agent_version = agent_status, agent_version
        self.extensions = {}        # lower-case name -> Extension, insertion ordered
        self.busy_until = 0.0       # extension operations on one VM are serialized; None = forever
        self.vm_id = stable_id(sub, rg, "vm", name)
        # A Flexible scale set's instance is an ordinary VM carrying the scale set's id
        # (tests/data/flexible-scale-sets.md, section 2); these stay None/empty for a standalone VM.
        self.scale_set_id = None
        self.platform_fault_domain = None
        self.computer_name = name
        self.instance_id = name     # Flexible: "the instance ID is simply the name of the virtual machine"
        self.model_version = None   # the scale-set model version the VM runs (Flexible instances only)
        self.pending = []           # [(at, model_version, {lower name: Extension})] as on a Uniform Instance

    def key(self):
        return self.name


class Instance:
    """A scale-set instance: the model version it runs and its own copy of the extensions."""

    def __init__(self, instance_id, model_version):
        self.instance_id = str(instance_id)
        self.model_version = model_version
        self.extensions = {}
        self.pending = []           # [(at, model_version, {lower name: Extension})] upgrades not yet applied


class ScaleSet:
    def __init__(self, sub, rg, name, location, os_type, upgrade_mode, max_batch_pct, agent_status, agent_version):
        self.sub, self.rg, self.name, self.location, self.os_type = sub, rg, name, location, os_type
        self.upgrade_mode, self.max_batch_pct = upgrade_mode, max_batch_pct
        self.agent_status, self.agent_version = agent_status, agent_version
        self.model_version = 1
        self.extensions = {}        # the model: lower name -> Extension (run = the model update's own run)
        self.instances = []
        self.busy_until = 0.0
        self.unique_id = stable_id(sub, rg, "vmss", name)
        self.tags = {}              # the resource's tags (Microsoft.Resources/tags at the scale set's scope)
        self.last_rolling = None    # {"op", "instances", "policy"} of the latest rolling upgrade (rollingUpgrades/latest)
        # Uniform (instances are Instance objects) or Flexible (instances are the VM objects of sub.vms).
        self.orchestration_mode = UNIFORM
        self.platform_fault_domain_count = None
        self.flexible_next = 0      # counter behind the deterministic names of new Flexible instances


class Operation:
    """An Azure-AsyncOperation: InProgress until `end` (None = never), then Succeeded or Failed with `error`."""

    def __init__(self, op_id, location, start, end, error=None):
        self.id, self.location, self.start, self.end, self.error = op_id, location, start, end, error

    def status(self, now):
        if self.end is None or now < self.end:
            return "InProgress"
        return "Failed" if self.error else "Succeeded"


class Subscription:
    def __init__(self, sub_id, tenant, display_name):
        self.id, self.tenant, self.display_name = sub_id, tenant, display_name
        self.service_principals = {}    # lower client id -> {"secret": str|None, "federated": bool}
        self.managed_identities = []    # client ids; the first one answers when no client_id is asked for
        self.resource_groups = {}       # lower name -> {"name", "location"}
        self.vms = {}                   # (lower rg, lower name) -> VM
        self.scale_sets = {}            # (lower rg, lower name) -> ScaleSet
        self.features = {}              # (lower ns, lower name) -> Feature
        self.providers = {}             # lower ns -> Feature-like record for registrationState


class Transition:
    """A registration state that moves on its own: `state` now, `target` from `until` on."""

    def __init__(self, namespace, name, state, held=lambda: False):
        self.namespace, self.name, self.state = namespace, name, state
        self.target, self.until = None, None
        self.held = held  # the hold_registrations setting: while true, a transition does not finish

    def current(self, now):
        if self.until is not None and now >= self.until and not self.held():
            self.state, self.target, self.until = self.target, None, None
        return self.state

    def move(self, via, target, now, duration):
        self.state, self.target, self.until = via, target, now + duration


def _agent(spec, os_type):
    agent = spec.get("agent") or {}
    default_version = "2.7.41491.1102" if os_type == "Windows" else "2.9.1.1"
    status = agent.get("status", "Ready")
    if status not in ("Ready", "NotReady"):
        raise SeedError(f"agent status must be Ready or NotReady, not {status!r}")
    return status, str(agent.get("version", default_version))


def _seed_extension(spec, location, os_type, digest):
    """An extension from the seed, already in its final state (its handler ran before the emulator started)."""
    from . import handlers  # local import: handlers imports this module

    try:
        props = {
            "publisher": spec["publisher"],
            "type": spec["type"],
            "typeHandlerVersion": str(spec["type_handler_version"]),
            "autoUpgradeMinorVersion": bool(spec.get("auto_upgrade_minor_version", True)),
        }
    except KeyError as exc:
        raise SeedError(f"extension {spec.get('name')!r} needs {exc.args[0]}") from None
    for seed_key, arm_key in (("settings", "settings"), ("enable_automatic_upgrade", "enableAutomaticUpgrade"),
                              ("suppress_failures", "suppressFailures"), ("force_update_tag", "forceUpdateTag"),
                              ("provision_after_extensions", "provisionAfterExtensions")):
        if seed_key in spec:
            props[arm_key] = spec[seed_key]
    state = spec.get("state", "Succeeded")
    if state not in ("Succeeded", "Failed"):
        raise SeedError(f"extension {spec['name']!r}: state must be Succeeded or Failed")
    outcome = "succeeded" if state == "Succeeded" else "failed"
    message = spec.get("message")
    if message is None:
        message = handlers.status_message(props, os_type, outcome, None, spec.get("stdout", ""), spec.get("stderr", ""))
    run = HandlerRun(0.0, 0.0, outcome, message, stdout=spec.get("stdout", ""), stderr=spec.get("stderr", ""),
                     version=str(spec["handler_version"]) if "handler_version" in spec else None)
    return Extension(spec["name"], props, run, location=location, tags=spec.get("tags"),
                     protected=digest(spec.get("protected_settings")))


def _os_type(spec):
    os_type = spec.get("os_type", "Linux")
    if os_type not in ("Linux", "Windows"):
        raise SeedError(f"os_type must be Linux or Windows, not {os_type!r}")
    return os_type


def has_health_extension(extensions):
    return any(e.props.get("type", "").lower() in HEALTH_EXTENSION_TYPES and e.deleting_until is None
               for e in extensions.values())


def scale_set_arm_id(vmss):
    return (f"/subscriptions/{vmss.sub}/resourceGroups/{vmss.rg}/providers/Microsoft.Compute/"
            f"virtualMachineScaleSets/{vmss.name}")


def new_flexible_vm(vmss, name=None):
    """A new instance of a Flexible scale set, not yet in any subscription: named "{scale set}_{8 hex}" and
    computer-named "{prefix}{6 hex}" as Azure names them (tests/data/flexible-scale-sets.md, section 2),
    deterministically (same seed, same names), spread over the fault domains."""
    index = vmss.flexible_next
    vmss.flexible_next += 1
    guid = stable_id(vmss.sub, vmss.rg, "flexible", vmss.name, index).replace("-", "")
    vm = VM(vmss.sub, vmss.rg, name or f"{vmss.name}_{guid[:8]}", vmss.location, vmss.os_type, "running",
            vmss.agent_status, vmss.agent_version)
    vm.scale_set_id = scale_set_arm_id(vmss)
    vm.platform_fault_domain = index % max(1, vmss.platform_fault_domain_count or 1)
    vm.computer_name = f"{vmss.name[:9]}{guid[8:14]}"
    vm.model_version = 0
    return vm


class State:
    """The whole emulated world plus the admin-controlled knobs; rebuilt from the seed by reset()."""

    def __init__(self, seed):
        self.lock = threading.RLock()
        self.seed = seed
        self._digest_key = os.urandom(32)  # per process: digests cannot be compared across runs or guessed
        self.reset()

    def protected_digest(self, protected):
        """A keyed digest of protected settings (None when there are none); the values themselves are dropped."""
        if protected is None:
            return None
        canonical = json.dumps(protected, sort_keys=True, separators=(",", ":")).encode("utf-8")
        return hmac.new(self._digest_key, canonical, hashlib.sha256).hexdigest()

    # --- seed -------------------------------------------------------------------------------------------
    def reset(self):
        with self.lock:
            self.settings = copy.deepcopy(DEFAULT_SETTINGS)
            self.throttle = {}          # throttling.py's counters: buckets by key, windows by sub id
            self.merge_settings(self.seed.get("settings") or {})
            self.faults = []            # [{"rule": dict, "remaining": int|None}]
            self.requests = []
            self.operations = {}        # op id -> Operation
            # Every handler run the agent started, oldest first, with the digest of the protected settings it ran
            # with (handlers.start_run): the admin API's GET handler-runs.
            self.handler_runs = []
            self.images = self._load_images(self.seed.get("extension_images") or {})
            self.subscriptions = {}
            for spec in self.seed.get("subscriptions") or []:
                self._load_subscription(spec)
            for vm_set in self.seed.get("vm_sets") or []:
                sub = self.subscriptions.get(str(vm_set.get("subscription", "")).lower()) \
                    or next(iter(self.subscriptions.values()))
                self._load_vm_set(sub, vm_set)

    def _merge_setting(self, key, value):
        if key not in DEFAULT_SETTINGS:
            raise ValueError(f"unknown setting {key!r}; known: {sorted(DEFAULT_SETTINGS)}")
        if key == "throttle":
            if not isinstance(value, dict) or set(value) - {"writes", "reads", "window_s"}:
                raise ValueError("throttle takes an object with writes, reads and window_s")
            self.settings["throttle"].update(value)
            self.throttle = {}
        elif key == "throttle_model":
            if value not in THROTTLE_MODELS:
                raise ValueError(f"throttle_model must be one of {list(THROTTLE_MODELS)}, not {value!r}")
            if value != self.settings["throttle_model"]:
                self.throttle = {}      # a new model starts with full buckets
            self.settings["throttle_model"] = value
        elif key == "time_scale":
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
                raise ValueError("setting 'time_scale' must be a number greater than 0")
            self.settings[key] = float(value)
        elif isinstance(DEFAULT_SETTINGS[key], bool):
            if not isinstance(value, bool):
                raise ValueError(f"setting {key!r} must be true or false")
            self.settings[key] = value
        else:
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ValueError(f"setting {key!r} must be a non-negative number")
            self.settings[key] = int(value) if key == "page_size" else float(value)

    def _held(self):
        return self.settings["hold_registrations"]

    def merge_settings(self, values):
        """Merge admin/seed settings. Setting `throttle` without `throttle_model` selects the "window" model, so
        tools written for the earlier emulator get the budget they configure."""
        with self.lock:
            for key, value in values.items():
                self._merge_setting(key, value)
            if "throttle" in values and "throttle_model" not in values:
                self._merge_setting("throttle_model", "window")

    @staticmethod
    def _load_images(spec):
        """location -> lower publisher -> lower type -> {"publisher", "type", "os", "versions"} (canonical casing)."""
        images = {}
        for location, publishers in spec.items():
            per_location = images.setdefault(location.lower(), {})
            for publisher, types in (publishers or {}).items():
                for type_name, entry in (types or {}).items():
                    if isinstance(entry, list):
                        entry = {"versions": entry}
                    per_location.setdefault(publisher.lower(), {})[type_name.lower()] = {
                        "publisher": publisher, "type": type_name, "os": entry.get("os"),
                        "versions": [str(v) for v in entry.get("versions") or []]}
        return images

    def _load_subscription(self, spec):
        try:
            sub = Subscription(str(spec["id"]), str(spec["tenant"]), spec.get("name", "Emulator Subscription"))
        except KeyError as exc:
            raise SeedError(f"a subscription needs {exc.args[0]}") from None
        self.subscriptions[sub.id.lower()] = sub
        for sp in spec.get("service_principals") or []:
            sub.service_principals[str(sp["client_id"]).lower()] = {
                "secret": sp.get("secret"), "federated": bool(sp.get("federated", False))}
        sub.managed_identities = [str(mi["client_id"]) for mi in spec.get("managed_identities") or []]
        for rg_spec in spec.get("resource_groups") or []:
            rg = {"name": rg_spec["name"], "location": rg_spec.get("location", "westeurope")}
            sub.resource_groups[rg["name"].lower()] = rg
            for vm_spec in rg_spec.get("vms") or []:
                self._load_vm(sub, rg, vm_spec)
            for ss_spec in rg_spec.get("scale_sets") or []:
                self._load_scale_set(sub, rg, ss_spec)
        for vm_set in spec.get("vm_sets") or []:
            self._load_vm_set(sub, vm_set)
        for namespace, features in (spec.get("features") or {}).items():
            for name, state in (features or {}).items():
                sub.features[(namespace.lower(), name.lower())] = Transition(namespace, name, state, self._held)
        for namespace, state in (spec.get("providers") or {}).items():
            sub.providers[namespace.lower()] = Transition(namespace, namespace, state, self._held)

    def _load_vm(self, sub, rg, spec):
        os_type = _os_type(spec)
        status, version = _agent(spec, os_type)
        vm = VM(sub.id, rg["name"], spec["name"], spec.get("location", rg["location"]), os_type,
                spec.get("power_state", "running"), status, version)
        for ext_spec in spec.get("extensions") or []:
            ext = _seed_extension(ext_spec, vm.location, os_type, self.protected_digest)
            vm.extensions[ext.name.lower()] = ext
        sub.vms[(rg["name"].lower(), vm.name.lower())] = vm
        return vm

    def _load_vm_set(self, sub, spec):
        """`vm_sets` entries generate many alike VMs: prefix "fleet-", count 20 -> fleet-001 .. fleet-020."""
        rg_name = spec["resource_group"]
        rg = sub.resource_groups.setdefault(rg_name.lower(), {"name": rg_name,
                                                              "location": spec.get("location", "westeurope")})
        width = max(3, len(str(spec["count"])))
        for index in range(1, int(spec["count"]) + 1):
            vm_spec = {k: v for k, v in spec.items() if k not in ("prefix", "count", "resource_group", "subscription")}
            vm_spec["name"] = f"{spec['prefix']}{index:0{width}d}"
            self._load_vm(sub, rg, vm_spec)

    def _load_scale_set(self, sub, rg, spec):
        os_type = _os_type(spec)
        status, version = _agent(spec, os_type)
        mode = spec.get("upgrade_policy", "Manual")
        if mode not in ("Manual", "Automatic", "Rolling"):
            raise SeedError(f"scale set {spec['name']!r}: upgrade_policy must be Manual, Automatic or Rolling")
        vmss = ScaleSet(sub.id, rg["name"], spec["name"], spec.get("location", rg["location"]), os_type, mode,
                        int(spec.get("max_batch_instance_percent", 20)), status, version)
        vmss.tags = dict(spec.get("tags") or {})
        for ext_spec in spec.get("extensions") or []:
            ext = _seed_extension(ext_spec, None, os_type, self.protected_digest)
            ext.version = vmss.model_version
            vmss.extensions[ext.name.lower()] = ext
        if spec.get("orchestration_mode", UNIFORM) != UNIFORM:
            self._load_flexible_instances(sub, rg, vmss, spec)
            return
        ids = spec.get("instances")
        if ids is None:
            ids = range(int(spec.get("capacity", 2)))
        for instance_id in ids:
            instance = Instance(instance_id, vmss.model_version)
            for key, ext in vmss.extensions.items():
                instance.extensions[key] = copy.copy(ext)
            vmss.instances.append(instance)
        sub.scale_sets[(rg["name"].lower(), vmss.name.lower())] = vmss

    def _load_flexible_instances(self, sub, rg, vmss, spec):
        """A Flexible scale set: its instances are VMs in the scale set's resource group (seed.example.yml)."""
        if spec["orchestration_mode"] != FLEXIBLE:
            raise SeedError(f"scale set {spec['name']!r}: orchestration_mode must be Uniform or Flexible")
        vmss.orchestration_mode = FLEXIBLE
        vmss.platform_fault_domain_count = int(spec.get("platform_fault_domain_count", 1))
        if vmss.upgrade_mode == "Rolling" and not has_health_extension(vmss.extensions):
            raise SeedError(f"scale set {spec['name']!r}: a Flexible scale set with upgrade_policy Rolling needs "
                            "an ApplicationHealthLinux/ApplicationHealthWindows extension in its model")
        entries = spec.get("instances")
        if entries is None:
            entries = [None] * int(spec.get("capacity", 2))
        for entry in entries:
            entry = {"name": entry} if isinstance(entry, str) else dict(entry or {})
            apply_model = entry.pop("apply_model", True)
            entry.setdefault("os_type", vmss.os_type)
            entry.setdefault("agent", spec.get("agent") or {})
            vm = new_flexible_vm(vmss, entry.pop("name", None))
            entry["name"] = vm.name
            seeded = self._load_vm(sub, rg, entry)
            for attr in ("scale_set_id", "platform_fault_domain", "computer_name"):
                setattr(seeded, attr, getattr(vm, attr))
            seeded.model_version = 0
            if apply_model:  # the model's extensions already ran on the instance, like the VM's own seed extensions
                seeded.model_version = vmss.model_version
                for key, ext in vmss.extensions.items():
                    applied = copy.copy(ext)
                    applied.location = seeded.location
                    seeded.extensions.setdefault(key, applied)
            vmss.instances.append(seeded)
        sub.scale_sets[(rg["name"].lower(), vmss.name.lower())] = vmss

    # --- faults -----------------------------------------------------------------------------------------
    def add_faults(self, rules):
        with self.lock:
            for rule in rules:
                if not isinstance(rule, dict) or ("match" in rule) == ("extension" in rule):
                    raise ValueError("each fault rule needs exactly one of 'match' or 'extension'")
                if "extension" in rule:
                    ext = rule["extension"]
                    if not {"vm", "name"} <= set(ext):
                        raise ValueError("an extension fault needs 'vm' and 'name'")
                    if ext.get("outcome", "failed") not in ("succeeded", "failed", "timeout"):
                        raise ValueError("outcome must be succeeded, failed or timeout")
                else:
                    if "respond" not in rule:
                        raise ValueError("a match fault needs 'respond'")
                times = rule.get("times")
                self.faults.append({"rule": rule, "remaining": None if times is None else int(times)})

    def take_match_fault(self, method, path):
        """The first live `match` rule for this request, consuming one of its `times`."""
        for fault in self.faults:
            match = fault["rule"].get("match")
            if match is None or fault["remaining"] == 0:
                continue
            if match.get("method") and match["method"].upper() != method:
                continue
            if match.get("path") and not re.search(match["path"], path):
                continue
            if fault["remaining"] is not None:
                fault["remaining"] -= 1
            return fault["rule"]["respond"]
        return None

    def take_extension_fault(self, target, name):
        """The first live `extension` rule for this VM ("vm" or "vmss/instanceId") and extension name."""
        for fault in self.faults:
            ext = fault["rule"].get("extension")
            if ext is None or fault["remaining"] == 0:
                continue
            if ext["vm"].lower() == target.lower() and ext["name"].lower() == name.lower():
                if fault["remaining"] is not None:
                    fault["remaining"] -= 1
                return ext
        return None

    # --- lookups ----------------------------------------------------------------------------------------
    def find_principal(self, tenant, client_id):
        for sub in self.subscriptions.values():
            if sub.tenant.lower() == tenant.lower() and client_id.lower() in sub.service_principals:
                return sub.service_principals[client_id.lower()]
        return None

    def tenant_known(self, tenant):
        return any(sub.tenant.lower() == tenant.lower() for sub in self.subscriptions.values())

    def managed_identity(self, client_id):
        """(tenant, client id) of the identity asked for, or of the default one when client_id is None."""
        for sub in self.subscriptions.values():
            for mi in sub.managed_identities:
                if client_id is None or mi.lower() == client_id.lower():
                    return sub.tenant, mi
        return None

    def new_operation(self, location, start, end, error=None):
        op = Operation(str(uuid.uuid4()), location, start, end, error)
        self.operations[op.id] = op
        return op
