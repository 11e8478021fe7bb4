# -*- coding: utf-8 -*-
# Copyright: azure_vm.extensions contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Rerun one VM or scale-set extension without ever losing or altering its definition, and recover from any stop.

Shared by vm_extension and vmss_extension (and so by the rerun_extension role). In order:

1. read the extension's definition from Azure (every property: version, both upgrade flags including false,
   suppressFailures, provisionAfterExtensions, settings, tags, Key Vault reference, forceUpdateTag);
2. refuse before any write unless the protected settings are supplied, come from Key Vault, or Azure shows there
   are none (no fingerprint tag, with the user's word for it; or a fingerprint of no protected settings). The
   fingerprint tag is the extension's tag on a VM and the scale set's tag on a scale set;
3. write a backup file (never a secret; directory 0700, file 0600, one file per extension and run);
4. delete_reapply: delete and wait (on a scale set the removal is rolled out), then put back exactly what was read
   plus the supplied protected settings and wait for the handler (or the rollout); force_update_tag: send the same
   definition with a new forceUpdateTag;
5. report, with the backup file. When the reapply fails, the error names the backup and gives a task that restores
   it; when a run is killed between the delete and the reapply, the next rerun of the same extension finds it
   absent, finds the unfinished backup and restores it.

The delete, the write and the waits are the state classes' own (vm_extension_state.VmExtension,
vmss_extension_state.VmssExtension): this module only decides what they are asked to do, hands them each
definition explicitly (the module's parameters are never changed) and one deadline for the whole rerun.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import glob
import json
import os
import re
import socket
import uuid

try:
    import fcntl
except ImportError:  # not POSIX: no lock between concurrent reruns (Ansible controllers are POSIX)
    fcntl = None

from ansible.module_utils.basic import env_fallback

from ansible_collections.azure_vm.extensions.plugins.module_utils.errors import AzureOperationError
from ansible_collections.azure_vm.extensions.plugins.module_utils.extension_model import (
    FINGERPRINT_TAG,
    MASK,
    default_timeout,
    fingerprint,
    fingerprint_matches,
)
from ansible_collections.azure_vm.extensions.plugins.module_utils.extension_status import extension_result
from ansible_collections.azure_vm.extensions.plugins.module_utils.waiter import Deadline

RERUN_METHODS = ("force_update_tag", "delete_reapply")
DEFAULT_BACKUP_DIR = "~/.ansible/azure_vm_extensions/backups"
BACKUP_DIR_ENV = "AZURE_VM_EXTENSIONS_BACKUP_DIR"
BACKUP_FORMAT = "azure_vm.extensions/rerun-backup/1"
# Stages a backup file goes through. An extension that is absent while its newest backup is in one of the
# UNFINISHED stages was lost by an interrupted or failed rerun: the next rerun restores it.
STAGE_SAVED, STAGE_DELETED, STAGE_REAPPLY_FAILED = "saved", "deleted", "reapply_failed"
STAGE_DONE, STAGE_RESTORED = "reapplied", "restored"
UNFINISHED = (STAGE_SAVED, STAGE_DELETED, STAGE_REAPPLY_FAILED)

# The definition of an extension in module-option names; what a rerun reads, backs up and reapplies.
DEFINITION_KEYS = ("publisher", "type", "type_handler_version", "settings", "auto_upgrade_minor_version",
                   "enable_automatic_upgrade", "suppress_failures", "provision_after_extensions",
                   "protected_settings_from_key_vault", "force_update_tag", "tags", "location")
DECLARED_KEYS = ("publisher", "type", "type_handler_version")
VM_ONLY_KEYS = ("tags", "location")

# Protected-settings keys common extension types take (lower-case type -> keys), named when a rerun is refused.
PROTECTED_SETTINGS_HINTS = {
    "customscript": "commandToExecute, script, fileUris, storageAccountName, storageAccountKey, managedIdentity",
    "customscriptextension": "commandToExecute, fileUris, storageAccountName, storageAccountKey, managedIdentity",
    "vmaccessforlinux": "username, password, ssh_key, reset_ssh, remove_user, expiration",
    "vmaccessagent": "username, password",
    "linuxdiagnostic": "storageAccountName, storageAccountSasToken, storageAccountEndPoint, sinksConfig",
    "iaasdiagnostics": "storageAccountName, storageAccountKey, storageAccountEndPoint",
    "dsc": "configurationArguments, configurationUrlSasToken, configurationDataUrlSasToken",
    "dscforlinux": "StorageAccountName, StorageAccountKey, RegistrationUrl, RegistrationKey",
    "azurediskencryption": "AADClientSecret, Passphrase",
    "azurediskencryptionforlinux": "AADClientSecret, Passphrase",
    "chefclient": "validation_key, secret",
    "linuxchefclient": "validation_key, secret",
    "microsoftmonitoringagent": "workspaceKey",
    "omsagentforlinux": "workspaceKey",
}

# The module options a rerun adds to vm_extension and vmss_extension (documented in the doc fragment
# azure_vm.extensions.extension_rerun).
RERUN_OPTIONS = dict(
    rerun_method=dict(type="str", default="force_update_tag", choices=list(RERUN_METHODS)),
    rerun_overrides=dict(type="dict", options=dict(
        publisher=dict(type="str"),
        type=dict(type="str"),
        type_handler_version=dict(type="str"),
        settings=dict(type="dict"),
        auto_upgrade_minor_version=dict(type="bool"),
        enable_automatic_upgrade=dict(type="bool"),
        suppress_failures=dict(type="bool"),
        provision_after_extensions=dict(type="list", elements="str"),
        protected_settings_from_key_vault=dict(type="dict", no_log=False, options=dict(
            secret_url=dict(type="str", required=True, no_log=False),
            source_vault_id=dict(type="str", required=True),
        )),
        tags=dict(type="dict"),
        protected_settings_fingerprint=dict(type="bool", no_log=False),
    )),
    no_protected_settings=dict(type="bool", default=False, no_log=False),
    backup_dir=dict(type="path", fallback=(env_fallback, [BACKUP_DIR_ENV])),
    # A backup file's path, or the backup itself as a failed rerun returns it (rerun.backup): AWX job containers
    # forget their disk, the job's artifacts and results do not.
    definition_from_backup=dict(type="raw"),
)


def rerun_option_rules(rules):
    """The modules' option rules with the rerun's: publisher/type/type_handler_version stop being required by
    Ansible for state=present, because a rerun reads them from Azure and a restore from the backup;
    check_declared() requires them otherwise, with the same words."""
    rules = dict(rules)
    rules["required_if"] = [rule for rule in rules.get("required_if") or [] if tuple(rule[:2]) != ("state", "present")]
    rules["mutually_exclusive"] = list(rules.get("mutually_exclusive") or []) + [
        ("definition_from_backup", "rerun"), ("definition_from_backup", "rerun_overrides"),
        ("definition_from_backup", "publisher"), ("definition_from_backup", "type"),
        ("definition_from_backup", "type_handler_version"), ("definition_from_backup", "settings"),
    ]
    return rules


def extension_rerun(azure, kind, make_state, validate):
    """The rerun or restore this task asks for, or None when it is an ordinary one (then the module runs as always).

    kind: "vm" or "vmss"; make_state(deadline): a new VmExtension or VmssExtension for this task's extension;
    validate(options): the module's input checks.
    A rerun is handled here when it must read the definition from Azure (rerun=true without a declared
    definition, or rerun_method=delete_reapply) and a restore when definition_from_backup is given.
    """
    params = azure.params
    declared = [key for key in DECLARED_KEYS if params.get(key) is not None]
    if params["state"] == "absent":
        for option in ("definition_from_backup", "rerun_overrides"):
            if params.get(option) is not None:
                raise AzureOperationError("%s needs state=present" % option)
        return None
    if params.get("definition_from_backup"):
        return ExtensionRerun(azure, kind, make_state, validate)
    if params["rerun"]:
        if declared and len(declared) < len(DECLARED_KEYS):
            raise AzureOperationError(
                "rerun: declare all of publisher, type and type_handler_version (then they are what is reapplied) "
                "or none of them (then the definition is read from Azure); got only %s" % ", ".join(declared))
        if declared and params.get("rerun_overrides"):
            raise AzureOperationError("rerun_overrides applies to the definition read from Azure; with a declared "
                                      "definition (publisher, type, type_handler_version) change the options instead")
        if params["rerun_method"] == "delete_reapply" or not declared:
            return ExtensionRerun(azure, kind, make_state, validate)
    if params.get("rerun_overrides") is not None:
        raise AzureOperationError("rerun_overrides needs rerun=true")
    missing = [key for key in DECLARED_KEYS if params.get(key) is None]
    if missing:
        raise AzureOperationError(
            "state is present but all of the following are missing: %s (or set definition_from_backup to restore a "
            "backup, or rerun=true to rerun the extension as it is in Azure)" % ", ".join(missing))
    return None


# ---- definitions ---------------------------------------------------------------------------------------------------
def definition_of(ext, kind):
    """The definition of an extension read from ARM (REST shape), in module-option names; never a secret.

    The Key Vault reference comes back in module-option shape, the fingerprint tag is left out (it is bookkeeping,
    recreated from the supplied protected settings), scale-set extensions have no tags nor location."""
    snake = extension_result(ext)
    definition = dict((key, snake.get(key)) for key in DEFINITION_KEYS)
    vault = snake.get("protected_settings_from_key_vault")
    if vault:
        definition["protected_settings_from_key_vault"] = {
            "secret_url": vault.get("secretUrl") or vault.get("secret_url"),
            "source_vault_id": (vault.get("sourceVault") or {}).get("id") or vault.get("source_vault_id")}
    tags = dict((ext.get("tags") or {}))
    tags.pop(FINGERPRINT_TAG, None)
    definition["tags"] = tags if ext.get("tags") is not None else None
    if kind == "vmss":
        for key in VM_ONLY_KEYS:
            definition.pop(key, None)
    return definition


def stored_fingerprint(kind, name, ext, vmss):
    """The protected-settings fingerprint Azure holds for this extension: the extension's tag on a VM, the scale
    set's tag azure_vm.extensions.protected_settings.<name> on a scale set (scale-set extensions have no tags)."""
    if kind == "vmss":
        return ((vmss or {}).get("tags") or {}).get("%s.%s" % (FINGERPRINT_TAG, name))
    return ((ext or {}).get("tags") or {}).get(FINGERPRINT_TAG)


def protected_settings_evidence(definition, supplied, stored, asserted_none):
    """How the reapply gets the protected settings right: (evidence, problem).

    evidence: supplied, key_vault, none_proven (the fingerprint is that of no protected settings), none_asserted
    (the user says none and Azure holds no fingerprint), or fingerprint (Azure proves there are some).
    problem: None, or why a delete would lose or change them."""
    if supplied is not None:
        if stored and not fingerprint_matches(supplied, stored):
            return "supplied", "mismatch"
        return "supplied", None
    if definition.get("protected_settings_from_key_vault"):
        return "key_vault", None
    if stored:
        if fingerprint_matches({}, stored):
            return "none_proven", None
        return "fingerprint", "asserted" if asserted_none else "missing"
    if asserted_none:
        return "none_asserted", None
    return "unknown", "unknown"


# ---- backups -------------------------------------------------------------------------------------------------------
def backup_dir(params):
    return os.path.abspath(os.path.expanduser(params.get("backup_dir") or DEFAULT_BACKUP_DIR))


def _safe(name):
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def ensure_folder(folder, name):
    """The backup folder, created readable by its owner only; raises AzureOperationError naming it."""
    try:
        if not os.path.isdir(folder):
            os.makedirs(folder, 0o700)
        os.chmod(folder, 0o700)
    except (IOError, OSError) as exc:
        raise AzureOperationError("cannot write the backup of extension %s to %s (set backup_dir to a writable "
                                  "directory): %s. Nothing was deleted or written." % (name, folder, exc))
    return folder


def write_json_0600(path, data, create):
    """Write data as JSON readable by the owner only; create=True never overwrites, an update replaces atomically."""
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    target = path if create else "%s.%s.tmp" % (path, uuid.uuid4().hex[:8])
    handle = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(handle, "w") as out:
        out.write(text)
    if not create:
        os.replace(target, path)


def load_backup(source):
    """A backup written by a rerun, checked to be one: from a file (a path) or as a rerun returned it (a dict, e.g.
    from an AWX job's artifacts). Raises AzureOperationError naming where it came from."""
    if isinstance(source, dict):
        data, path = dict(source), source.get("path") or "(the backup given in definition_from_backup)"
    else:
        path = os.path.abspath(os.path.expanduser(str(source)))
        try:
            with open(path) as handle:
                data = json.load(handle)
        except (IOError, OSError, ValueError) as exc:
            raise AzureOperationError("definition_from_backup: cannot read %s: %s" % (path, exc))
    if not isinstance(data, dict) or data.get("format") != BACKUP_FORMAT:
        raise AzureOperationError("definition_from_backup: %s is not a backup written by an extension rerun "
                                  "(format %r)" % (path, BACKUP_FORMAT))
    data["path"] = path
    return data


def find_backups(folder, kind, group, target, name, subscription_id=None):
    """The backups of this extension in folder, newest first (Azure's names are case-insensitive, file names not).
    A backup of the same names in another subscription is another extension's."""
    found = []
    for path in glob.glob(os.path.join(folder, "*.json")):
        try:
            data = load_backup(path)
        except AzureOperationError:
            continue
        where = data.get("target") or {}
        if subscription_id and (where.get("subscription_id") or subscription_id).lower() != subscription_id.lower():
            continue
        if (where.get("kind") == kind and (where.get("resource_group") or "").lower() == group.lower()
                and (where.get("name") or "").lower() == target.lower()
                and (where.get("extension") or "").lower() == name.lower()):
            found.append(data)
    return sorted(found, key=lambda data: data.get("created") or "", reverse=True)


def restore_task(kind, group, target, name, path, secrets_needed, subscription_id=None):
    """The task that restores an extension from a backup file, as YAML text a user can paste; it names the
    subscription, so that it writes where the backup was taken whatever AZURE_SUBSCRIPTION_ID says."""
    module = "vmss_extension" if kind == "vmss" else "vm_extension"
    lines = ["- name: Restore extension %s from its backup" % name,
             "  azure_vm.extensions.%s:" % module]
    if subscription_id:
        lines.append("    subscription_id: %s" % json.dumps(subscription_id))
    lines += ["    resource_group: %s" % json.dumps(group),
              "    %s: %s" % ("vmss_name" if kind == "vmss" else "vm_name", json.dumps(target)),
              "    name: %s" % json.dumps(name),
              "    definition_from_backup: %s" % json.dumps(path)]
    if secrets_needed:
        lines.append("    protected_settings: \"{{ vault_protected_settings }}\"  # its protected settings (never saved)")
    return "\n".join(lines)


class RerunLock(object):
    """One rerun of an extension at a time: an exclusive lock on a file in the backup folder (the kernel releases it
    when the process ends, also when it is killed). Its content says who holds it, for the refusal message."""

    def __init__(self, folder, kind, subscription_id, group, target, name):
        self.path = os.path.join(folder, ".%s_%s_%s_%s_%s.lock" % (
            kind, _safe(subscription_id or "").lower(), _safe(group).lower(), _safe(target).lower(),
            _safe(name).lower()))
        self.handle = None

    def acquire(self):
        """True when this process holds the lock now; False when another rerun holds it."""
        if fcntl is None:
            return True
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except (IOError, OSError):
            handle.close()
            return False
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "since": datetime.datetime.now(datetime.timezone.utc).isoformat()}))
        handle.flush()
        self.handle = handle
        return True

    def holder(self):
        try:
            with open(self.path) as handle:
                return json.load(handle)
        except (IOError, OSError, ValueError):
            return {}

    def release(self):
        if self.handle is not None:
            self.handle.close()  # closing the file releases the lock
            self.handle = None


# ---- the rerun -----------------------------------------------------------------------------------------------------
class ExtensionRerun(object):
    """One rerun (or restore) of one extension on a VM or a scale set."""

    def __init__(self, azure, kind, make_state, validate):
        self.azure = azure
        self.params = azure.params  # read only: each step gets its definition explicitly
        self.kind = kind
        self.make_state = make_state
        self.validate = validate
        self.group = self.params["resource_group"]
        self.target = self.params["vmss_name" if kind == "vmss" else "vm_name"]
        self.name = self.params["name"]
        self.method = self.params["rerun_method"]
        self.where = "%s %s" % ("scale set" if kind == "vmss" else "VM", self.target)
        self.backup = None
        self.deadline = None  # the whole rerun's, started once the extension's type is known
        self.fingerprint_override = None

    @property
    def subscription_id(self):
        return self.azure.connection.subscription_id

    def step(self, definition=None, wait=True):
        """present(definition) (or absent() without one) of a new state object on the rerun's deadline; its
        warnings reach the task's output."""
        run = self.make_state(self.deadline)
        try:
            return run.present(definition, wait) if definition is not None else run.absent(wait)
        finally:
            for warning in run.warnings:
                self.azure.warn(warning)

    # ---- reading -------------------------------------------------------------------------------------------------
    def read(self):
        """(extension or None, the VM or scale set) as Azure has them now."""
        return self.make_state(self.deadline).read()

    # ---- the parts -----------------------------------------------------------------------------------------------
    def run(self):
        """The rerun's result; a failure carries `rerun` (outcome refused when nothing was written, else failed),
        and, once a backup exists, the backup itself (never a secret) in rerun.backup: where the controller's disk
        does not last (AWX), the task result and the job's artifacts keep what a restore needs."""
        lock = None
        if not self.azure.check_mode:
            lock = RerunLock(ensure_folder(backup_dir(self.params), self.name), self.kind, self.subscription_id,
                             self.group, self.target, self.name)
            if not lock.acquire():
                holder = lock.holder()
                raise AzureOperationError(
                    "another rerun of extension %s on %s in resource group %s is running (process %s on %s since %s); "
                    "nothing was deleted or written. Run this one again once it has finished." % (
                        self.name, self.where, self.group, holder.get("pid", "?"), holder.get("host", "?"),
                        holder.get("since", "?")), error_code="RerunInProgress",
                    rerun=self.outcome("refused", reason="rerun_in_progress"))
        try:
            return self.steps()
        except AzureOperationError as exc:
            if "rerun" not in exc.result:
                exc.result["rerun"] = self.outcome("refused" if self.backup is None else "failed",
                                                   exc.msg.splitlines()[0] if exc.msg else "")
            if self.backup is not None and exc.result["rerun"].get("outcome") not in ("refused",):
                exc.result["rerun"].setdefault("backup", self.backup_data())
            raise
        finally:
            if lock is not None:
                lock.release()

    def steps(self):
        if self.params.get("definition_from_backup"):
            return self.restore(load_backup(self.params["definition_from_backup"]), explicit=True)
        current, parent = self.read()
        if current is None:
            return self.absent_extension()
        before = definition_of(current, self.kind)
        definition = self.merge(before)
        request = self.request(definition)
        stored = stored_fingerprint(self.kind, self.name, current, parent)
        if not stored and self.fingerprint_override is None:
            # Keep the extension's opt-out: reapplying supplied protected settings must not add a fingerprint tag.
            request["protected_settings_fingerprint"] = False
        evidence = self.guard(definition, stored)
        self.precheck(parent)
        if self.azure.check_mode:
            return self.report(dict(changed=True, extension=extension_result(current)), "planned", before)
        self.backup = self.save(current, before, definition, evidence, stored)
        if self.method == "force_update_tag":
            result = self.step(dict(request, rerun=True, force_update_tag=None), self.params["wait"])
        else:
            self.delete()
            result = self.reapply(request)
        self.stage(STAGE_DONE)
        return self.report(result, "succeeded", before)

    def merge(self, before):
        """What will be reapplied: the definition read, under the declared options (a declared definition is desired
        state) or the rerun_overrides."""
        params = self.params
        definition = dict(before)
        if params.get("publisher") is not None:  # a declared definition: its options win where given
            for key in DEFINITION_KEYS:
                if key in params and params[key] is not None and key != "force_update_tag":
                    definition[key] = params[key]
        for key, value in (params.get("rerun_overrides") or {}).items():
            if value is None:
                continue
            if self.kind == "vmss" and key in VM_ONLY_KEYS + ("protected_settings_fingerprint",):
                raise AzureOperationError("rerun_overrides.%s applies to VM extensions only (on a scale set use the "
                                          "module's own option)" % key)
            if key == "protected_settings_fingerprint":
                self.fingerprint_override = value
                continue
            definition[key] = value
        if definition.get("protected_settings_from_key_vault") and params.get("protected_settings") is not None:
            raise AzureOperationError(
                "extension %s on %s references its protected settings in Key Vault; protected_settings and a Key "
                "Vault reference exclude each other" % (self.name, self.where))
        identity = [key for key in ("publisher", "type") if (definition[key] or "").lower() != (before[key] or "").lower()]
        if identity and self.method != "delete_reapply":
            raise AzureOperationError("%s cannot change in place; use rerun_method=delete_reapply" % " and ".join(identity))
        return definition

    def request(self, definition):
        """What the state class is asked to apply: the definition with this task's protected settings and checks,
        validated as the module validates its input; starts the rerun's one deadline."""
        request = dict(self.params)
        request.update((key, definition.get(key)) for key in DEFINITION_KEYS)
        request.update(state="present", rerun=False)
        if self.fingerprint_override is not None:
            request["protected_settings_fingerprint"] = self.fingerprint_override
        self.validate(request)
        if self.deadline is None:
            self.deadline = Deadline(self.params.get("timeout") or default_timeout(request.get("type")))
        return request

    def guard(self, definition, stored):
        """Refuse, before anything is written, a delete that would lose or change the protected settings."""
        evidence, problem = protected_settings_evidence(definition, self.params.get("protected_settings"), stored,
                                                        self.params["no_protected_settings"])
        if problem is None or self.method == "force_update_tag" and problem != "mismatch":
            return evidence
        tag = FINGERPRINT_TAG if self.kind == "vm" else "%s.%s (on the scale set)" % (FINGERPRINT_TAG, self.name)
        start = "refusing to delete extension %s (%s.%s) on %s: nothing was deleted or written. " % (
            self.name, definition["publisher"], definition["type"], self.where)
        if problem == "mismatch":
            raise AzureOperationError(start + (
                "The protected_settings given differ from those Azure holds (the fingerprint in the tag %s), so the "
                "reapply would change them. Pass the same protected settings; to change them, apply the new ones "
                "with this module without rerun (the change is detected) and rerun afterwards." % tag),
                rerun=self.outcome("refused", reason=problem))
        hint = PROTECTED_SETTINGS_HINTS.get((definition["type"] or "").lower())
        text = start
        if problem in ("asserted", "missing"):
            text += "It carries the tag %s, so protected settings were set on it through this collection%s. " % (
                tag, " and no_protected_settings=true cannot be right" if problem == "asserted" else "")
        text += ("Azure never returns protected settings, so a delete would lose them. Pass them again in "
                 "protected_settings (from Ansible Vault; never logged nor written to the backup)%s; or set "
                 "no_protected_settings=true if it has none; or use rerun_method=force_update_tag, which runs the "
                 "handler again without a delete and keeps the stored protected settings." % (
                     ", for this type typically: " + hint if hint else ""))
        raise AzureOperationError(text, rerun=self.outcome("refused", reason="protected_settings"))

    def precheck(self, parent):
        """What would make Azure refuse the reapply after the delete, checked before it: on a VM the agent and the
        other extensions (the state class's own check), on a scale set the share of unhealthy instances."""
        if self.method != "delete_reapply":
            return
        run = self.make_state(self.deadline)
        if self.kind == "vmss":
            instances = run.read_instances()
            mode = run.policy_of(parent)[0]
            run.check_health(instances, mode, run.targets(instances) if mode == "Manual" else [])
        else:
            run.check_ready(parent, self.params["check_vm_agent"], self.params["ignore_failed_extensions"])

    def delete(self):
        """Delete the extension and wait until it is gone (on a scale set the removal is rolled out)."""
        try:
            self.step()
        except AzureOperationError as exc:
            current = self.read()[0]
            if current is not None:
                self.stage(STAGE_SAVED)
                raise AzureOperationError(
                    "rerun of extension %s on %s: the delete failed, the extension is still there: %s (backup: %s)" % (
                        self.name, self.where, exc.msg, self.backup["path"]), **dict(
                            exc.fields(), rerun=self.outcome("delete_failed")))
            self.stage(STAGE_DELETED)
            raise self.recovery_error("the delete failed half-way and the extension is gone", exc)
        self.stage(STAGE_DELETED)

    def reapply(self, request):
        try:
            return self.step(request, self.params["wait"])
        except AzureOperationError as exc:
            self.stage(STAGE_REAPPLY_FAILED)
            raise self.recovery_error("the extension was deleted and putting it back failed", exc)

    def recovery_error(self, what, exc):
        """The error after the delete: what failed, the backup, and the task that restores it."""
        needs = self.backup["protected_settings"]["needed_for_restore"]
        task = restore_task(self.kind, self.group, self.target, self.name, self.backup["path"], needs,
                            self.subscription_id)
        msg = ("rerun of extension %s on %s, method %s: %s: %s\n"
               "Its definition is saved in %s%s. Once the cause is fixed, restore it with this task (or run this "
               "rerun again: it finds the extension absent and restores it from the backup):\n%s" % (
                   self.name, self.where, self.method, what, exc.msg, self.backup["path"],
                   " (protected settings are never saved: pass them again)" if needs else "", task))
        fields = exc.fields()
        fields.update(rerun=self.outcome("failed", restore_task=task))
        return AzureOperationError(msg, **fields)

    # ---- absent extension and restores ----------------------------------------------------------------------------
    def absent_extension(self):
        found = find_backups(backup_dir(self.params), self.kind, self.group, self.target, self.name,
                             self.subscription_id)
        if found and found[0].get("stage") in UNFINISHED:
            return self.restore(found[0], explicit=False)
        text = "extension %s not found on %s in resource group %s. Nothing was written." % (
            self.name, self.where, self.group)
        if found:
            needs = found[0]["protected_settings"]["needed_for_restore"]
            text += " Its newest backup is %s (from %s); to put it back:\n%s" % (
                found[0]["path"], found[0].get("created"),
                restore_task(self.kind, self.group, self.target, self.name, found[0]["path"], needs,
                             self.subscription_id))
        else:
            module = "vmss_extension" if self.kind == "vmss" else "vm_extension"
            text += " To install it, use azure_vm.extensions.%s." % module
        raise AzureOperationError(text, error_code="NotFound", rerun=self.outcome("not_found"))

    def restore(self, backup, explicit):
        """Put the extension back from a backup: the same write as an ordinary task with that definition (so a
        second run changes nothing), refused when the backup says protected settings are needed and none are given."""
        where = backup.get("target") or {}
        mine = dict(kind=self.kind, subscription_id=self.subscription_id, resource_group=self.group, name=self.target,
                    extension=self.name)
        wrong = [key for key in mine if (where.get(key) or mine[key] or "").lower() != (mine[key] or "").lower()]
        if wrong:
            raise AzureOperationError("definition_from_backup: %s is the backup of extension %s on %s %s in resource "
                                      "group %s of subscription %s, not of this task's (%s differ)" % (
                                          backup["path"], where.get("extension"), where.get("kind"), where.get("name"),
                                          where.get("resource_group"), where.get("subscription_id"),
                                          ", ".join(wrong)))
        self.backup = backup
        if explicit:
            self.method = "restore"
        definition = backup["definition"]
        supplied = self.params.get("protected_settings")
        if backup["protected_settings"]["needed_for_restore"] and supplied is None \
                and not definition.get("protected_settings_from_key_vault"):
            raise AzureOperationError(
                "%sextension %s on %s: the backup %s says it had protected settings (%s), which are never saved. "
                "Pass them in protected_settings to restore it. Nothing was written." % (
                    "" if explicit else "an earlier rerun deleted ", self.name, self.where, backup["path"],
                    backup["protected_settings"]["evidence"]), rerun=self.outcome("refused", reason="protected_settings"))
        saved = backup["protected_settings"].get("fingerprint")
        if saved == MASK:
            # A backup as a task returned it (its fingerprint masked in results): nothing to compare with.
            self.azure.warn("definition_from_backup: this backup's protected-settings fingerprint was masked in the "
                            "task result it came from, so the protected_settings given cannot be checked against "
                            "the ones the extension had; the backup file %s keeps it." % backup.get("path"))
            saved = None
        if supplied is not None and saved and not fingerprint_matches(supplied, saved):
            raise AzureOperationError(
                "refusing to restore extension %s on %s from %s: the protected_settings given differ from those it "
                "had (the backup keeps their salted fingerprint). Nothing was written. Pass the same protected "
                "settings; to change them, restore first, then apply the new ones with this module." % (
                    self.name, self.where, backup["path"]), rerun=self.outcome("refused", reason="mismatch"))
        request = self.request(definition)
        if not backup["protected_settings"].get("fingerprint_tag", True) and self.fingerprint_override is None:
            request["protected_settings_fingerprint"] = False  # it had no fingerprint tag: none is added
        result = self.step(request, self.params["wait"])
        if self.azure.check_mode:
            return self.report(result, "planned" if result.get("changed") else "unchanged",
                               backup.get("extension_definition"))
        if result.get("changed"):
            self.stage(STAGE_RESTORED)
        outcome = "restored" if result.get("changed") else "unchanged"
        if not explicit and result.get("changed"):
            self.azure.warn("extension %s on %s was absent after an interrupted rerun; restored it from %s" % (
                self.name, self.where, backup["path"]))
        return self.report(result, outcome, backup.get("extension_definition"))

    # ---- the backup file ------------------------------------------------------------------------------------------
    def save(self, current, before, definition, evidence, stored):
        folder = ensure_folder(backup_dir(self.params), self.name)
        try:
            now = datetime.datetime.now(datetime.timezone.utc) if hasattr(datetime, "timezone") \
                else datetime.datetime.utcnow()
            path = os.path.join(folder, "%s_%s_%s_%s.json" % (_safe(self.group), _safe(self.target), _safe(self.name),
                                                              now.strftime("%Y%m%dT%H%M%S%fZ")))
            backup = {
                "format": BACKUP_FORMAT,
                "created": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "stage": STAGE_SAVED,
                "method": self.method,
                "target": dict(kind=self.kind, subscription_id=self.subscription_id,
                               resource_group=self.group, name=self.target, extension=self.name),
                "extension_id": current.get("id"),
                "extension_definition": before,
                "definition": definition,
                "provisioning_state": (current.get("properties") or {}).get("provisioningState"),
                "protected_settings": {
                    "saved": False,
                    "evidence": evidence,
                    "fingerprint_tag": bool(stored),
                    # What lets a recovery prove it gets the same protected settings back: the salted fingerprint
                    # Azure held, or one made now of the ones supplied (never the settings themselves).
                    "fingerprint": stored or (fingerprint(self.params["protected_settings"])
                                              if evidence == "supplied" else None),
                    "needed_for_restore": evidence in ("supplied", "fingerprint"),
                },
            }
            backup["restore_task"] = restore_task(self.kind, self.group, self.target, self.name, path,
                                                  backup["protected_settings"]["needed_for_restore"],
                                                  self.subscription_id)
            write_json_0600(path, backup, create=True)
        except (IOError, OSError) as exc:
            raise AzureOperationError("cannot write the backup of extension %s to %s (set backup_dir to a writable "
                                      "directory): %s. Nothing was deleted or written." % (self.name, folder, exc))
        backup["path"] = path
        return backup

    def backup_data(self):
        """The backup as the task returns it: what definition_from_backup takes, never a secret. Without the
        restore task's text, whose "{{ vault_protected_settings }}" placeholder Ansible would template when the
        backup comes back as a variable (extra vars from a job's artifacts). The fingerprint's value is masked, as
        in every result (it is offline-guessing material): job logs and artifacts never carry it; a restore from
        this copy cannot prove the protected settings are the same, and says so."""
        data = dict((key, value) for key, value in (self.backup or {}).items() if key != "restore_task")
        kept = dict(data.get("protected_settings") or {})
        if kept.get("fingerprint"):
            kept["fingerprint"] = MASK
        data["protected_settings"] = kept
        return data

    def stage(self, stage):
        if not self.backup:
            return
        self.backup["stage"] = stage
        data = dict((key, value) for key, value in self.backup.items() if key != "path")
        try:
            write_json_0600(self.backup["path"], data, create=False)
        except (IOError, OSError) as exc:
            self.azure.warn("could not record stage %s in the backup %s: %s" % (stage, self.backup["path"], exc))

    # ---- reporting ------------------------------------------------------------------------------------------------
    def outcome(self, outcome, handler_message="", **extra):
        backup = (self.backup or {}).get("path") or ""
        message = re.sub(r"\s+", " ", handler_message or "").strip()
        summary = '%s=%s extension=%s method=%s outcome=%s handler="%s" backup=%s' % (
            self.kind, self.target, self.name, self.method, outcome, message.replace('"', "'"), backup)
        result = dict(kind=self.kind, target=self.target, extension=self.name, method=self.method, outcome=outcome,
                      handler_message=message, backup_file=backup, summary=summary)
        result.update(extra)
        return result

    def report(self, result, outcome, before):
        result = dict(result)
        if self.kind == "vmss":
            instances = result.get("instances") or []
            ok = [item for item in instances if item.get("state") == "succeeded"]
            messages = []
            for item in instances:
                if item.get("message") and item["message"].strip() not in messages:
                    messages.append(item["message"].strip())
            handler = "%d/%d instances succeeded%s" % (len(ok), len(instances),
                                                       ": " + " | ".join(messages) if messages else "")
        else:
            view = result.get("instance_view") or (result.get("extension") or {}).get("instance_view") or {}
            handler = " | ".join(status["message"].strip() for status in
                                 (view.get("statuses") or []) + (view.get("substatuses") or [])
                                 if status.get("message") and status["message"].strip())
        result["before"] = before
        result["rerun"] = self.outcome(outcome, handler)
        result["summary"] = result["rerun"]["summary"]
        if outcome != "unchanged":
            result["changed"] = True
        return result
