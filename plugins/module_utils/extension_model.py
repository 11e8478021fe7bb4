# -*- coding: utf-8 -*-
# Copyright: azure_vm.extensions contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What an extension definition is and whether Azure's extension matches it: the options the VM and scale-set
modules share and their validation, exact comparison, the request body, and the protected-settings fingerprint.

Works on ARM's REST shape (camelCase dicts), so it needs no SDK and no connection (results and status:
extension_status.py; 'latest' versions: extension_images.py).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import hashlib
import hmac
import json
import math
import os
import re
import uuid

from ansible_collections.azure_vm.extensions.plugins.module_utils.errors import AzureOperationError

# Tag on the extension resource that carries the protected-settings fingerprint (ARM never returns the secrets).
FINGERPRINT_TAG = "azure_vm.extensions.protected_settings"
FINGERPRINT_SCHEME = "pbkdf2-sha256"
# Deliberately slow: about 0.1 s per guess on one core, so a leaked tag cannot be brute-forced cheaply.
FINGERPRINT_ITERATIONS = 200000

# Azure's handler timeouts (the extension docs for Windows and Linux): 90 minutes for handlers that legitimately
# run long, 20 for everything else.
LONG_RUNNING_HANDLERS = ("customscript", "customscriptextension", "chef", "chefclient", "linuxchefclient", "dsc",
                         "dscforlinux")
LONG_TIMEOUT = 90 * 60
DEFAULT_TIMEOUT = 20 * 60

# What diffs and results show instead of a protected value.
MASK = "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"


# (module option, ARM property) pairs compared in place; publisher/type are identity, handled separately.
COMPARED_PROPERTIES = (
    ("type_handler_version", "typeHandlerVersion"),
    ("auto_upgrade_minor_version", "autoUpgradeMinorVersion"),
    ("enable_automatic_upgrade", "enableAutomaticUpgrade"),
    ("suppress_failures", "suppressFailures"),
    ("force_update_tag", "forceUpdateTag"),
    ("provision_after_extensions", "provisionAfterExtensions"),
)


# The options the VM and scale-set extension modules share (each adds its target and its own options).
EXTENSION_OPTIONS = dict(
    resource_group=dict(type="str", required=True),
    name=dict(type="str", required=True),
    state=dict(type="str", default="present", choices=["present", "absent"]),
    publisher=dict(type="str"),
    type=dict(type="str"),
    # raw, so that an unquoted YAML number (2.10, read as the float 2.1) is refused instead of silently becoming '2.1'
    type_handler_version=dict(type="raw"),
    settings=dict(type="dict"),
    protected_settings=dict(type="dict", no_log=True),
    # secret_url + source_vault_id, or ARM's own shape (secretUrl, sourceVault.id) as the info modules return it;
    # checked by key_vault_reference().
    protected_settings_from_key_vault=dict(type="dict", no_log=False),
    auto_upgrade_minor_version=dict(type="bool", default=True),
    enable_automatic_upgrade=dict(type="bool"),
    suppress_failures=dict(type="bool"),
    force_update_tag=dict(type="str"),
    rerun=dict(type="bool", default=False),
    provision_after_extensions=dict(type="list", elements="str"),
    wait=dict(type="bool", default=True),
    timeout=dict(type="int"),
)
# What the info modules return besides the definition: accepted and ignored, so that an info module's extension
# entry can be passed back to a write module unchanged (round trip).
READ_ONLY_OPTIONS = dict(
    id=dict(type="str"),
    provisioning_state=dict(type="str"),
    instance_view=dict(type="dict"),
)
EXTENSION_OPTIONS.update(READ_ONLY_OPTIONS)
EXTENSION_OPTION_RULES = dict(
    required_if=[("state", "present", ("publisher", "type", "type_handler_version"))],
    mutually_exclusive=[("protected_settings", "protected_settings_from_key_vault"), ("rerun", "force_update_tag")],
)
# Azure takes typeHandlerVersion as "major.minor" only (400 InvalidParameter "The value of parameter
# typeHandlerVersion is invalid." for "2", "2.1.6", "abc"; the Azure CLI trims --version to major.minor for that
# reason): tests/data/reference/issue-25.md. autoUpgradeMinorVersion picks the patch.
VERSION_PATTERN = re.compile(r"^\d+\.\d+$")


def validate_extension_options(params, prefix=""):
    """Refuse bad input before anything is read or written, naming the option and what is allowed.

    Raises AzureOperationError. Also turns protected_settings_from_key_vault into ARM's shape (it accepts the
    module's snake_case suboptions and ARM's own shape, as the info modules return it). prefix: words naming where
    the options come from (the fleet's "host web-01: extension x: ").
    """
    version = params["type_handler_version"]
    if isinstance(version, (float, bool)):
        raise AzureOperationError("%stype_handler_version must be quoted, for example '2.10': YAML reads an unquoted "
                                  "2.10 as the number 2.1 and the trailing zero is lost; got the %s %r" % (
                                      prefix, type(version).__name__, version))
    if version is not None and not isinstance(version, str):
        raise AzureOperationError("%stype_handler_version must be a string such as '2.1' or 'latest'; got the %s %r" % (
            prefix, type(version).__name__, version))
    if params["state"] == "present" and version != "latest" and not VERSION_PATTERN.match(version or ""):
        raise AzureOperationError("%stype_handler_version must be major.minor such as '2.1' (Azure refuses any other "
                                  "form; the handler's patch version is Azure's choice with auto_upgrade_minor_version) "
                                  "or 'latest'; got %r" % (prefix, version))
    if params.get("timeout") is not None and params["timeout"] <= 0:
        raise AzureOperationError("%stimeout must be a positive number of seconds; got %r" % (prefix, params["timeout"]))
    if params["rerun"] and params["state"] == "absent":
        raise AzureOperationError("%srerun=true needs state=present" % prefix)
    vault = params.get("protected_settings_from_key_vault")
    if vault is not None:
        params["protected_settings_from_key_vault"] = key_vault_reference(vault, prefix)


def key_vault_reference(vault, prefix=""):
    """protected_settings_from_key_vault in ARM's shape {secretUrl, sourceVault: {id}}, from either the module's
    suboptions (secret_url, source_vault_id) or ARM's shape itself (what the info modules return)."""
    secret_url = vault.get("secret_url") or vault.get("secretUrl")
    source = vault.get("source_vault_id") or (vault.get("sourceVault") or {}).get("id") \
        or (vault.get("source_vault") or {}).get("id")
    if not secret_url or not source:
        raise AzureOperationError("%sprotected_settings_from_key_vault needs secret_url and source_vault_id (or ARM's "
                                  "secretUrl and sourceVault.id); got keys %s" % (prefix, ", ".join(sorted(vault))))
    return {"secretUrl": secret_url, "sourceVault": {"id": source}}


def default_timeout(extension_type):
    """Seconds to wait for a handler of this type."""
    return LONG_TIMEOUT if (extension_type or "").lower() in LONG_RUNNING_HANDLERS else DEFAULT_TIMEOUT


# ---- values ------------------------------------------------------------------------------------------------------
def json_text(value):
    """A scalar as JSON writes it: 30 -> '30', True -> 'true', 1.0 -> '1.0', NaN -> 'NaN'."""
    return json.dumps(value)


def _key_text(key):
    """Dict keys as they go over the wire: JSON object keys are strings (a YAML 1: becomes "1"); never folded."""
    return key if isinstance(key, str) else json_text(key)


def values_equal(desired, actual):
    """Exact comparison, the way ARM stores JSON: types matter, keys are exact, nothing is stripped or folded.

    The one coercion is the one Ansible's templating causes: a string equals a number or boolean only when it is
    exactly that value's JSON text ("30" == 30, "true" == True, but "030", "30.0", " 30", "True", "1e3" do not
    equal 30/True/1000). Numbers compare by their JSON text too, so 1 != 1.0 and 18-digit ids never round.
    """
    if isinstance(desired, dict) or isinstance(actual, dict):
        if not (isinstance(desired, dict) and isinstance(actual, dict)):
            return False
        left = dict((_key_text(key), value) for key, value in desired.items())
        right = dict((_key_text(key), value) for key, value in actual.items())
        return set(left) == set(right) and all(values_equal(left[key], right[key]) for key in left)
    if isinstance(desired, (list, tuple)) or isinstance(actual, (list, tuple)):
        if not (isinstance(desired, (list, tuple)) and isinstance(actual, (list, tuple))):
            return False
        return len(desired) == len(actual) and all(values_equal(a, b) for a, b in zip(desired, actual))
    scalar = (bool, int, float)
    if isinstance(desired, str) and isinstance(actual, str):
        return desired == actual
    if isinstance(desired, str) and isinstance(actual, scalar):
        return desired == json_text(actual)
    if isinstance(actual, str) and isinstance(desired, scalar):
        return actual == json_text(desired)
    if isinstance(desired, scalar) and isinstance(actual, scalar):
        # true != 1 (JSON types), 1 != 1.0 (their JSON text differs)
        return isinstance(desired, bool) == isinstance(actual, bool) and json_text(desired) == json_text(actual)
    return desired is None and actual is None


def same_settings(desired, actual):
    return values_equal(desired or {}, actual or {})


def version_tuple(version):
    """'2.1.10' -> (2, 1, 10); non-numeric parts sort after numbers. Trailing zeros do not count."""
    parts = []
    for piece in str(version or "").split("."):
        parts.append((0, int(piece), "") if piece.isdigit() else (1, 0, piece))
    while parts and parts[-1] == (0, 0, ""):
        parts.pop()
    return tuple(parts)


def versions_matching(versions, prefix=None):
    """The versions under a prefix ('2.1' takes 2.1, 2.1.6 and 2.1.10, not 2.10), in numeric order."""
    return sorted((v for v in versions if not prefix or v == prefix or v.startswith(prefix.rstrip(".") + ".")),
                  key=version_tuple)


def latest_version(versions, prefix=None):
    """The highest version by numeric order (ARM lists them as strings: '2.1.10' < '2.1.6' there)."""
    candidates = versions_matching(versions, prefix)
    return candidates[-1] if candidates else None


def handler_version(version):
    """Major.minor: what typeHandlerVersion means when autoUpgradeMinorVersion lets Azure pick the patch."""
    return ".".join(str(version).split(".")[:2])


# ---- protected settings fingerprint ------------------------------------------------------------------------------
# Tag value format, versioned: 'v2$pbkdf2-sha256$<iterations>$<salt>$<hash>' over canonical JSON (sorted keys, no
# coercion). Format 1 ('pbkdf2-sha256$...', before 0.2.0) hashed values after a lossy normalization (numeric
# strings as floats, booleans stripped and lower-cased), so it cannot tell "0042" from "42". A format-1 tag is
# still accepted when the protected settings hold nothing that normalization could have conflated (no string
# that looks like a number or a boolean, no integer beyond 2**53); otherwise it counts as a change, and the
# protected settings are sent once, which rewrites the tag in format 2.
FINGERPRINT_FORMAT = "v2"


def canonical_json(value):
    """The exact JSON of a value: sorted keys, compact, no coercion (what the fingerprint hashes)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode("utf-8")


def _legacy_normalize(value):
    """Format 1's normalization, kept only to verify format-1 tags."""
    if isinstance(value, dict):
        return dict((str(key), _legacy_normalize(item)) for key, item in value.items())
    if isinstance(value, (list, tuple)):
        return [_legacy_normalize(item) for item in value]
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("true", "false"):
            return lowered == "true"
        try:
            return float(lowered)
        except ValueError:
            return value
    return value


def _legacy_ambiguous(value):
    """Whether format 1's normalization could have made this value equal to a different one."""
    if isinstance(value, dict):
        return any(not isinstance(key, str) or _legacy_ambiguous(item) for key, item in value.items())
    if isinstance(value, (list, tuple)):
        return any(_legacy_ambiguous(item) for item in value)
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return abs(value) > 2 ** 53
    if isinstance(value, float):
        return math.isnan(value)
    if isinstance(value, str):
        return _legacy_normalize(value) is not value
    return False


def _pbkdf2(data, salt, iterations):
    return base64.b64encode(hashlib.pbkdf2_hmac("sha256", data, salt, iterations)).decode("ascii")


def fingerprint(protected_settings, salt=None, iterations=FINGERPRINT_ITERATIONS):
    """A salted PBKDF2 of the protected settings, safe to store in a tag: 'v2$pbkdf2-sha256$iterations$salt$hash'."""
    salt = salt if salt is not None else os.urandom(16)
    return "%s$%s$%d$%s$%s" % (FINGERPRINT_FORMAT, FINGERPRINT_SCHEME, iterations,
                               base64.b64encode(salt).decode("ascii"),
                               _pbkdf2(canonical_json(protected_settings), salt, iterations))


def fingerprint_matches(protected_settings, stored):
    """True when the stored tag was made from exactly these protected settings (see the format note above)."""
    try:
        parts = stored.split("$")
        if len(parts) == 5 and parts[0] == FINGERPRINT_FORMAT:
            data = canonical_json(protected_settings)
            parts = parts[1:]
        elif len(parts) == 4:
            if _legacy_ambiguous(protected_settings):
                return False
            data = json.dumps(_legacy_normalize(protected_settings), sort_keys=True,
                              separators=(",", ":")).encode("utf-8")
        else:
            return False
        scheme, iterations, salt, digest = parts
        if scheme != FINGERPRINT_SCHEME:
            return False
        expected = _pbkdf2(data, base64.b64decode(salt), int(iterations))
    except (AttributeError, ValueError, TypeError):
        return False
    return hmac.compare_digest(expected, digest)


def user_tags(tags):
    """The tags a user manages: without the fingerprint tag (which may come back masked from an info module)."""
    return dict((key, value) for key, value in (tags or {}).items() if key != FINGERPRINT_TAG)


def mask_secrets(value):
    """Every leaf replaced by a mask, keys kept: what diff and output show of protected settings."""
    if isinstance(value, dict):
        return dict((key, mask_secrets(item)) for key, item in value.items())
    if isinstance(value, list):
        return [mask_secrets(item) for item in value]
    return MASK


# ---- comparison --------------------------------------------------------------------------------------------------
def identity_conflicts(desired, current):
    """Publisher/type cannot change in place; Azure normalizes their casing, so casing alone is no change."""
    props = current.get("properties") or {}
    problems = []
    for option, prop in (("publisher", "publisher"), ("type", "type")):
        wanted = desired.get(option)
        actual = props.get(prop)
        if wanted and actual and wanted.lower() != actual.lower():
            problems.append("%s %r -> %r" % (option, actual, wanted))
    return problems


def changed_properties(desired, current, use_fingerprint=True):
    """Names of the module options whose desired value differs from the extension ARM returned.

    ``desired`` holds module options (None = not managed). ``current`` is the REST-shaped extension.
    """
    props = current.get("properties") or {}
    changed = []
    for option, prop in COMPARED_PROPERTIES:
        wanted = desired.get(option)
        if wanted is None:
            continue
        actual = props.get(prop)
        if option == "type_handler_version":
            if version_tuple(wanted) != version_tuple(actual):
                changed.append(option)
        elif option == "provision_after_extensions":
            if sorted(wanted) != sorted(actual or []):
                changed.append(option)
        elif wanted != actual and not (actual is None and wanted is False):
            changed.append(option)
    if desired.get("settings") is not None and not same_settings(desired["settings"], props.get("settings")):
        changed.append("settings")
    kv_wanted = desired.get("protected_settings_from_key_vault")
    if kv_wanted is not None and not values_equal(kv_wanted, props.get("protectedSettingsFromKeyVault")):
        changed.append("protected_settings_from_key_vault")
    tags = dict(current.get("tags") or {})
    stored_fingerprint = tags.pop(FINGERPRINT_TAG, None)
    if desired.get("tags") is not None and not values_equal(user_tags(desired["tags"]), tags):
        changed.append("tags")
    if desired.get("protected_settings") is not None and use_fingerprint:
        if not stored_fingerprint or not fingerprint_matches(desired["protected_settings"], stored_fingerprint):
            changed.append("protected_settings")
    return changed


def build_body(desired, location, current=None, use_fingerprint=True):
    """The REST body of a PUT: the desired options over the current definition (so unmanaged fields survive)."""
    props = dict((current or {}).get("properties") or {})
    for read_only in ("provisioningState", "instanceView"):
        props.pop(read_only, None)
    props["publisher"] = desired.get("publisher") or props.get("publisher")
    props["type"] = desired.get("type") or props.get("type")
    for option, prop in COMPARED_PROPERTIES:
        if desired.get(option) is not None:
            props[prop] = desired[option]
    if desired.get("settings") is not None:
        props["settings"] = desired["settings"]
    if desired.get("protected_settings_from_key_vault") is not None:
        props["protectedSettingsFromKeyVault"] = desired["protected_settings_from_key_vault"]
    if desired.get("protected_settings") is not None:
        props["protectedSettings"] = desired["protected_settings"]
    tags = dict((current or {}).get("tags") or {})
    if desired.get("tags") is not None:
        tags = dict(user_tags(desired["tags"]), **dict((k, v) for k, v in tags.items() if k == FINGERPRINT_TAG))
    if desired.get("protected_settings") is not None and use_fingerprint:
        stored = tags.get(FINGERPRINT_TAG)
        if not (stored and fingerprint_matches(desired["protected_settings"], stored)):
            tags[FINGERPRINT_TAG] = fingerprint(desired["protected_settings"])
    elif not use_fingerprint:
        tags.pop(FINGERPRINT_TAG, None)
    body = {"location": location, "properties": props}
    if tags:
        body["tags"] = tags
    return body


def desired_definition(definition, name, current, where, version):
    """The definition as it will be sent: a publisher/type change is refused (it cannot be done in place), the
    version is the resolved one (extension_images.resolve_version turns 'latest' into a real version), and rerun
    becomes a fresh force-update tag. where: e.g. "VM vm-web-01"."""
    if current is not None:
        conflicts = identity_conflicts(definition, current)
        if conflicts:
            raise AzureOperationError(
                "extension %s on %s: %s cannot change in place. Delete the extension first (state=absent) or use "
                "the azure_vm.extensions.rerun_extension role." % (name, where, ", ".join(conflicts)))
    desired = dict(definition)
    desired["type_handler_version"] = version
    if definition.get("rerun"):
        desired["force_update_tag"] = str(uuid.uuid4())
    return desired


def matches_definition(model, ext):
    """Whether an extension (REST shape) carries the definition of a model extension (REST shape): same publisher
    and type, and no compared property differs (protected settings cannot be compared: ARM returns neither). What a
    Flexible scale set's VM has instead of Uniform's latestModelApplied. model None: the extension must be absent."""
    if model is None or ext is None:
        return model is None and ext is None
    props = model.get("properties") or {}
    wanted = dict((option, props.get(prop)) for option, prop in COMPARED_PROPERTIES)
    wanted.update(publisher=props.get("publisher"), type=props.get("type"), settings=props.get("settings"),
                  protected_settings_from_key_vault=props.get("protectedSettingsFromKeyVault"))
    return not identity_conflicts(wanted, ext) and not changed_properties(wanted, ext, use_fingerprint=False)
