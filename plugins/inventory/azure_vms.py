# -*- coding: utf-8 -*-
# Copyright: azure_vm.extensions contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: azure_vms
short_description: Azure VMs and scale-set instances (Uniform and Flexible) with their extensions' and agent's state
version_added: 0.1.0
description:
  - Lists the virtual machines of one or more subscriptions with a few paged list calls, never one read per VM,
    and makes each VM a host whose variables say what its VM agent and every extension handler report -
    provisioning state, handler state (V(succeeded), V(failed), V(transitioning)) and the handler's message.
  - Groups the hosts by extension state (every VM with a failed extension, per extension name and state), VM agent
    not ready, power state and location, plus the standard O(compose), O(groups) and O(keyed_groups).
  - Every host carries what addresses it exactly - C(azure_subscription_id), C(azure_resource_group) and
    C(azure_vm_name) (or C(azure_vmss_name) and C(azure_vmss_instance_id)), and C(azure_id) - so a task writes to the
    VM the inventory described whatever C(AZURE_SUBSCRIPTION_ID) says. C(azure_vm_name) and C(azure_resource_group)
    are what the C(azure_vm.extensions.extensions) role reads, and C(rerun_extension_vm_name),
    C(rerun_extension_resource_group) and C(azure_subscription_id) what the C(azure_vm.extensions.rerun_extension)
    role reads, so both run over this inventory with no mapping.
  - "An extension is B(failed) when ARM's provisioning state is V(Failed) B(or) its handler reports failed (either
    alone is enough; a V(Canceled) operation counts as V(Failed), as in the modules). ARM marks an extension
    V(Failed) when its handler outlives Azure's timeout (20 minutes, 90 for CustomScript, Chef and DSC) while the
    handler may still report transitioning; the rerun repairs both. Its C(state) is then V(failed) and the host is
    in C(azure_ext_failed) and C(azure_ext_<name>_failed). With O(list_model=false) the provisioning state is not
    read, and the handler alone decides."
  - "Requests, per subscription: the VM list with run-time status (C(statusOnly=true)) and the VM list (the model:
    OS type, tags, extension publishers, auto-upgrade flags, provisioning states), each one request per page,
    read in parallel, those of every subscription at once (each subscription paced within its own throttling
    budget): 2 x ceil(N / page size) for N VMs (ceil(N / page size) with O(list_model=false)). With
    O(include_vmss_instances), one paged list of the scale sets plus, per scale set, one paged list of its
    instances (Uniform, with their instance views; Flexible, the VM List with the scale set's filter, which only
    names its VMs: their status is in the statusOnly list already). Filters are applied to what the lists return, so they do not change
    the count. With the inventory cache warm, no request at all."
  - It resolves no network addresses (that would cost a list of network interfaces and one of public IP
    addresses per subscription, from another SDK). Put this source in one inventory directory with one that
    does, for example C(azure.azcollection.azure_rm) with C(plain_host_names=true), or a static file with
    C(ansible_host); hosts of the same name are merged. See the collection's C(docs/inventory.md).
  - The inventory file must end with C(azure_vms.yml) or C(azure_vms.yaml).
  - "Options with a fixed set of values (booleans included) are checked strictly before any request, by
    ansible-core's own argument validator: C(include_vmss_instances: ture) is an error naming the option and the
    values it takes, not V(false)."
  - Never a secret in host variables or the cache - ARM never returns protected settings, public settings are
    not read into host variables, and the collection's protected-settings fingerprint tags
    (C(azure_vm.extensions.protected_settings*)) are dropped from C(azure_tags) (each extension's
    C(protected_settings_fingerprint) says whether it had one).
author:
  - azure_vm.extensions maintainers (@azure-vm)
extends_documentation_fragment:
  - azure_vm.extensions.azure
  - ansible.builtin.constructed
  - ansible.builtin.inventory_cache
options:
  plugin:
    description: The name of this plugin; it marks the file as this plugin's source.
    required: true
    type: str
    choices: [azure_vm.extensions.azure_vms]
  subscriptions:
    description:
      - Subscription ids to list. Empty uses the one subscription of the authentication
        (O(subscription_id) or E(AZURE_SUBSCRIPTION_ID)).
      - Ids are compared case-insensitively and listed once each (in lower case, as in C(azure_subscription_id)).
      - Every subscription costs its own list requests; one token serves all of them.
    type: list
    elements: str
    default: []
  resource_groups:
    description: Only VMs in these resource groups (case-insensitive). Empty means all.
    type: list
    elements: str
    default: []
  locations:
    description: Only VMs in these locations, as ARM names them (V(westeurope), case-insensitive). Empty means all.
    type: list
    elements: str
    default: []
  tags:
    description:
      - Only VMs that carry every one of these tags. A value of V(null) (or an empty string) matches any value of
        the tag; otherwise the value must be equal.
      - A scale-set instance is matched by its scale set's tags.
      - Needs O(list_model=true), since only the model list returns tags.
    type: dict
    default: {}
  include_vmss_instances:
    description:
      - Also make a host of every instance of the Uniform scale sets. Their host names are
        C(<scale set>_<instance id>); they are in the group C(<group_prefix>vmss_instances), and have
        C(azure_vmss_name) and C(azure_vmss_instance_id) instead of C(azure_vm_name).
      - The instances of a Flexible scale set are VMs, hosts in any case (named by their VM names, addressed by
        C(azure_vm_name) like any VM). With this option (or O(list_model), whose model list names their scale set)
        they also get C(azure_vmss_name) and C(azure_vmss_orchestration_mode=Flexible) and join the groups
        C(<group_prefix>vmss_instances) and C(<group_prefix>vmss_<scale set>) besides C(<group_prefix>vms).
    type: bool
    default: false
  list_model:
    description:
      - Also list the VMs' model, for C(azure_os_type), C(azure_tags), and each extension's publisher, type,
        declared version, provisioning state and auto-upgrade flags.
      - V(false) halves the requests; an extension's publisher and type then come from its instance view, and the
        rest is V(null). O(tags) cannot be used then.
    type: bool
    default: true
  hostnames:
    description:
      - V(name) names each host by its VM name (a scale-set instance C(<scale set>_<instance id>)).
      - V(resource_group_name) names every host C(<resource group>_<name>) (lower-case resource group).
      - Host names are unique across every subscription listed. When hosts would share a name, B(each) of them
        (none keeps the shared name) takes the next longer form until it is unique - C(<name>), then
        C(<resource group>_<name>), then C(<subscription id>_<resource group>_<name>) (lower-case subscription id
        and resource group) - and a warning names the VMs and their host names. The result depends only on the
        VMs listed, never on the order of the lists.
    type: str
    choices: [name, resource_group_name]
    default: name
  group_prefix:
    description: Prefix of the groups this plugin makes (not those of O(groups) and O(keyed_groups)).
    type: str
    default: azure_
notes:
  - "Groups (with the default O(group_prefix)): C(azure_vms) (every VM, Flexible scale-set instances included);
    C(azure_vmss_instances) (Uniform and Flexible); C(azure_ext_failed) (any
    extension whose provisioning state or handler is failed, see above); C(azure_ext_transitioning) (a handler
    still running, on an extension that is not failed);
    C(azure_ext_<extension name>) and C(azure_ext_<extension name>_<state>); C(azure_agent_not_ready);
    C(azure_power_<state>) (V(running), V(stopped), V(deallocated), ...); C(azure_location_<location>);
    C(azure_vmss_<scale set>). Group names are lower case, with every character that is not a letter, digit or
    underscore replaced by an underscore."
  - Host variables are documented in the collection's C(docs/inventory.md); C(ansible-inventory --host NAME)
    shows them.
  - "The cache key covers the file's path and every option that changes what is read: O(subscriptions) (or, when
    empty, the subscription of the authentication), O(resource_groups), O(locations), O(tags),
    O(include_vmss_instances), O(list_model), O(cloud_environment), O(auth_source), O(profile), and the client
    and tenant ids. O(hostnames), O(group_prefix), O(compose), O(groups) and O(keyed_groups) are applied to the
    cached VMs, so changing them needs no fresh read."
  - "A warm cache shows Azure as it was when it was filled: after a repair (or any other write) its groups are
    stale. Read afresh before targeting a repair and to check it - C(ansible-playbook --flush-cache ...),
    C(ansible-inventory --flush-cache ...) or C(meta: refresh_inventory) - as C(docs/inventory.md) shows."
seealso:
  - name: Dynamic inventory
    description: How Ansible combines inventory sources in a directory.
    link: https://docs.ansible.com/ansible/latest/inventory_guide/intro_dynamic_inventory.html
"""

EXAMPLES = r"""
# inventory/fleet.azure_vms.yml - every VM of the subscription given by AZURE_SUBSCRIPTION_ID, with the
# credentials of the AZURE_* environment variables (what AWX's Azure credential injects)
plugin: azure_vm.extensions.azure_vms

# Further examples, each its own inventory file:

# Two subscriptions, two resource groups, only production VMs, with scale-set instances, cached for 10 minutes
# plugin: azure_vm.extensions.azure_vms
# subscriptions:
#   - 00000000-0000-0000-0000-000000000001
#   - 00000000-0000-0000-0000-000000000002
# resource_groups: [rg-web, rg-batch]
# tags:
#   environment: production
# include_vmss_instances: true
# cache: true
# cache_plugin: ansible.builtin.jsonfile
# cache_connection: ~/.cache/azure_vms
# cache_timeout: 600

# Own groups and variables on top of the built-in ones
# plugin: azure_vm.extensions.azure_vms
# keyed_groups:
#   - key: azure_os_type
#     prefix: os
#   - key: azure_vm_agent.version
#     prefix: agent
# groups:
#   customscript_failed: "'customScript' in azure_failed_extensions"
# compose:
#   agent_version: azure_vm_agent.version

# Then, to rerun the failed extension on exactly the VMs where it failed (each in its own subscription), from a
# fresh read (--flush-cache):
#   ansible-inventory -i inventory/ --flush-cache --graph azure_ext_customscript_failed
#   ansible-playbook -i inventory/ azure_vm.extensions.rerun_extension --flush-cache \
#     --limit azure_ext_customscript_failed -e rerun_extension_name=customScript -e @secrets.vault.yml
"""

import hashlib
import json
import os
import re
from concurrent.futures import ThreadPoolExecutor

from ansible import constants as C
from ansible.errors import AnsibleParserError
from ansible.inventory.group import to_safe_group_name
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.plugins.inventory import BaseInventoryPlugin, Cacheable, Constructable
from ansible.utils.display import Display

from ansible_collections.azure_vm.extensions.plugins.module_utils.arm import parse_resource_id
from ansible_collections.azure_vm.extensions.plugins.module_utils.auth import AZURE_AUTH_ARGSPEC, validate_auth_options
from ansible_collections.azure_vm.extensions.plugins.module_utils.client import AzureConnection
from ansible_collections.azure_vm.extensions.plugins.module_utils.errors import (
    AzureAuthError,
    AzureError,
    describe_azure_error,
)
from ansible_collections.azure_vm.extensions.plugins.module_utils.extension_model import FINGERPRINT_TAG
from ansible_collections.azure_vm.extensions.plugins.module_utils.extension_status import (
    extension_state,
    handler_state,
    power_state,
    status_messages,
    vm_agent_result,
)

try:
    import azure.core  # noqa: F401  # pylint: disable=unused-import

    HAS_AZURE = True
except ImportError:
    HAS_AZURE = False

display = Display()

# What ARM accepts (Microsoft.Resources naming rules): resource groups 1-90 of letters, digits, _ ( ) - . and not
# ending with a period; subscription ids are GUIDs; locations are ARM short names.
RESOURCE_GROUP_PATTERN = re.compile(r"^[-\w\._\(\)]{0,89}[-\w_\(\)]$", re.UNICODE)
SUBSCRIPTION_PATTERN = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
LOCATION_PATTERN = re.compile(r"^[A-Za-z0-9 ]+$")
# The lists' api-version (Compute's REST API, sent whichever SDK generation is installed): a published version with
# statusOnly on the VM List All, the VM List's virtualMachineScaleSet filter and the scale-set VM List's
# instanceView expansion (Microsoft.Compute 2024-07-01; the fleet's status sweep uses it too).
COMPUTE_API_VERSION = "2024-07-01"
# Threads for the lists: one per list at once (2 or 3 per subscription), never more than this.
MAX_THREADS = 32


def _lower(value):
    return (value or "").lower()


def public_tags(tags):
    """A resource's tags without the collection's protected-settings fingerprints (azure_vm.extensions.protected_settings*)."""
    return dict((key, value) for key, value in (tags or {}).items() if not key.startswith(FINGERPRINT_TAG))


def is_flexible(scale_set):
    return ((scale_set.get("properties") or {}).get("orchestrationMode") or "Uniform").lower() == "flexible"


def extension_records(resources, instance_view, fingerprint_tags=None):
    """One record per extension (name -> record): the model's definition joined with its handler's instance view.

    resources: the model's extension child resources (REST shape; None when the model was not listed);
    instance_view: the VM's (or instance's) instance view; fingerprint_tags: names of the extensions whose
    fingerprint is kept elsewhere (a scale set's tags). Never settings, never tags' values.
    """
    views = dict((view.get("name"), view) for view in (instance_view or {}).get("extensions") or [])
    models = dict((ext.get("name"), ext) for ext in resources or [] if ext.get("name"))
    records = {}
    for name in list(models) + [name for name in views if name not in models]:
        model = models.get(name) or {}
        props = model.get("properties") or {}
        view = views.get(name) or {}
        publisher, ext_type = props.get("publisher"), props.get("type")
        if not model and view.get("type"):
            # The instance view names the handler "<publisher>.<type>", the type being the last dotted part.
            publisher, dummy, ext_type = view["type"].rpartition(".")
        statuses = view.get("statuses") or []
        handler = handler_state(statuses)
        records[name] = {
            "name": name,
            "publisher": publisher or None,
            "type": ext_type or None,
            "type_handler_version": props.get("typeHandlerVersion"),
            "handler_version": view.get("typeHandlerVersion"),
            "provisioning_state": props.get("provisioningState"),
            "handler_state": handler,
            "state": extension_state(handler, props.get("provisioningState")),
            "message": status_messages(view) or None,
            "auto_upgrade_minor_version": props.get("autoUpgradeMinorVersion"),
            "enable_automatic_upgrade": props.get("enableAutomaticUpgrade"),
            "protected_settings_fingerprint": bool(
                FINGERPRINT_TAG in (model.get("tags") or {}) or name in (fingerprint_tags or ())),
        }
    return records


def host_record(status_vm, model_vm, subscription_id, scale_set=None):
    """The host variables of one VM or scale-set instance, from its statusOnly entry and its model entry."""
    status_vm = status_vm or {}
    model_vm = model_vm or {}
    ids = parse_resource_id(status_vm.get("id") or model_vm.get("id"))
    view = (status_vm.get("properties") or {}).get("instanceView") or {}
    props = model_vm.get("properties") or {}
    fingerprints = None
    tags = model_vm.get("tags")
    if scale_set is not None:
        # The collection keeps a scale set's fingerprints in its tags: azure_vm.extensions.protected_settings.<name>.
        tags = scale_set.get("tags")
        fingerprints = [key[len(FINGERPRINT_TAG) + 1:] for key in (tags or {}) if key.startswith(FINGERPRINT_TAG + ".")]
    os_disk = (props.get("storageProfile") or {}).get("osDisk") or {}
    extensions = extension_records(model_vm.get("resources") if model_vm else None, view, fingerprints)
    record = {
        "azure_id": status_vm.get("id") or model_vm.get("id"),
        "azure_subscription_id": subscription_id,
        "azure_resource_group": ids.get("resourcegroups"),
        "azure_location": status_vm.get("location") or model_vm.get("location"),
        "azure_os_type": os_disk.get("osType") or None,
        "azure_computer_name": view.get("computerName"),
        "azure_os_name": view.get("osName"),
        "azure_os_version": view.get("osVersion"),
        "azure_power_state": power_state(view),
        "azure_provisioning_state": props.get("provisioningState"),
        "azure_vm_agent": vm_agent_result(view),
        "azure_tags": public_tags(tags) if model_vm or scale_set is not None else None,
        "azure_extensions": extensions,
        "azure_failed_extensions": sorted(name for name, ext in extensions.items() if ext["state"] == "failed"),
    }
    if scale_set is None:
        record["azure_vm_name"] = status_vm.get("name") or model_vm.get("name")
        # The rerun_extension role's own variables, so that it needs no mapping either.
        record["rerun_extension_vm_name"] = record["azure_vm_name"]
        record["rerun_extension_resource_group"] = record["azure_resource_group"]
        # A Flexible scale set's instance is a VM that names its scale set (the model list carries it).
        flexible = (props.get("virtualMachineScaleSet") or {}).get("id")
        if flexible:
            flexible_instance_of(record, parse_resource_id(flexible).get("virtualmachinescalesets"))
    else:
        record["azure_vmss_name"] = scale_set.get("name")
        record["azure_vmss_instance_id"] = status_vm.get("instanceId") or ids.get("virtualmachines")
        record["azure_os_type"] = record["azure_os_type"] or (
            ((scale_set.get("properties") or {}).get("virtualMachineProfile") or {}).get("storageProfile") or {}
        ).get("osDisk", {}).get("osType")
    return record


def flexible_instance_of(record, scale_set_name):
    """Mark a VM's record as an instance of a Flexible scale set: it stays a VM (azure_vm_name, the VM APIs address
    it) and gains its scale set's name, so that it joins the scale set's group."""
    record["azure_vmss_name"] = scale_set_name
    record["azure_vmss_orchestration_mode"] = "Flexible"


def unique_subscriptions(subscriptions):
    """Subscription ids in lower case, each once (GUIDs are case-insensitive), in the order first listed."""
    seen = []
    for subscription in subscriptions or []:
        if _lower(subscription) not in seen:
            seen.append(_lower(subscription))
    return seen


def host_name_forms(record, mode):
    """The names a host may take, shortest first: <name>, <resource group>_<name>,
    <subscription>_<resource group>_<name> (V(resource_group_name) starts at the second)."""
    name = record.get("azure_vm_name") or "%s_%s" % (record["azure_vmss_name"], record["azure_vmss_instance_id"])
    group = _lower(record["azure_resource_group"])
    forms = [name, "%s_%s" % (group, name), "%s_%s_%s" % (_lower(record["azure_subscription_id"]), group, name)]
    return forms if mode == "name" else forms[1:]


def host_names(records, mode):
    """Unique host names, one per record (same order), and the renamed hosts grouped by the name they would have
    shared: [(shared name, [(ARM id, host name), ...])], sorted.

    Every host that shares its name with another moves to its next longer form (none keeps the shared name), until
    no two share one: the result depends only on the set of VMs, not on the order in which Azure listed them. Two
    records alike down to the subscription (impossible in ARM) are told apart by a number, in ARM id order.
    """
    forms = [host_name_forms(record, mode) for record in records]
    level = [0] * len(records)
    while True:
        holders = {}
        for index, record_forms in enumerate(forms):
            holders.setdefault(record_forms[level[index]], []).append(index)
        movable = [index for indexes in holders.values() if len(indexes) > 1
                   for index in indexes if level[index] < len(forms[index]) - 1]
        if not movable:
            break
        for index in movable:
            level[index] += 1
    names = [record_forms[level[index]] for index, record_forms in enumerate(forms)]
    for name, indexes in holders.items():
        ordered = sorted(indexes, key=lambda index: _lower(records[index].get("azure_id")))
        for number, index in enumerate(ordered[1:], 2):
            names[index] = "%s_%d" % (name, number)
    renamed = {}
    for index, record_forms in enumerate(forms):
        if names[index] != record_forms[0]:
            renamed.setdefault(record_forms[0], []).append(index)
    report = []
    for name in sorted(renamed):
        members = sorted(renamed[name], key=lambda index: _lower(records[index].get("azure_id")))
        report.append((name, [(records[index].get("azure_id"), names[index]) for index in members]))
    return names, report


def plugin_groups(record):
    """The names (without the prefix) of the groups this plugin puts a host in, in the order it adds them."""
    names = []
    if record.get("azure_vm_name"):
        names.append("vms")  # a Flexible scale set's instance is a VM too
    if record.get("azure_vmss_name"):
        names += ["vmss_instances", "vmss_" + record["azure_vmss_name"]]
    if record["azure_failed_extensions"]:
        names.append("ext_failed")
    for name, ext in record["azure_extensions"].items():
        names += ["ext_" + name, "ext_%s_%s" % (name, ext["state"])]
        if ext["state"] == "transitioning":
            names.append("ext_transitioning")
    if not record["azure_vm_agent"]["ready"]:
        names.append("agent_not_ready")
    names.append("power_" + record["azure_power_state"])
    if record["azure_location"]:
        names.append("location_" + record["azure_location"].replace(" ", ""))
    return names


def cached_records(value):
    """The records a cache holds: one JSON document (what parse stores), or, from a cache filled by an earlier
    version of this plugin, the records themselves."""
    if isinstance(value, (str, bytes)):
        try:
            return json.loads(value)
        except ValueError:
            raise KeyError("unreadable cache entry")  # read afresh, as for a missing entry
    return value


def strict_option_spec(definitions, config):
    """An argument spec for the options given in config whose values are a fixed set (booleans and choices).
    ansible-core's configuration turns any string it does not know as a boolean into false ('ture' -> false);
    ArgumentSpecValidator refuses it, naming the option and the values allowed."""
    spec = {}
    for key in config:
        definition = definitions.get(key) or {}
        if definition.get("type") in ("bool", "boolean"):
            spec[key] = {"type": "bool"}
        elif definition.get("choices"):
            spec[key] = {"type": "str", "choices": list(definition["choices"])}
    return spec


class InventoryModule(BaseInventoryPlugin, Constructable, Cacheable):
    NAME = "azure_vm.extensions.azure_vms"

    def verify_file(self, path):
        return super(InventoryModule, self).verify_file(path) and path.endswith(("azure_vms.yml", "azure_vms.yaml"))

    # ---- configuration ---------------------------------------------------------------------------------------
    def _validate(self, config, path):
        """Refuse what cannot work before any request: unknown options, values outside an option's fixed set
        (booleans included), malformed filters, bad auth options. Sets self._auth (the auth parameters)."""
        unknown = sorted(set(config) - set(self._options) - set(["plugin"]))
        if unknown:
            raise AnsibleParserError("%s: unknown option%s %s for %s; valid options: %s" % (
                path, "s" if len(unknown) > 1 else "", ", ".join(unknown), self.NAME, ", ".join(sorted(self._options))))

        definitions = C.config.get_configuration_definitions(plugin_type="inventory", name=self._load_name)
        spec = strict_option_spec(definitions, config)
        errors = ArgumentSpecValidator(spec).validate(dict((key, config[key]) for key in spec)).error_messages
        if errors:
            raise AnsibleParserError("%s: %s" % (path, "; ".join(errors)))

        def check_list(option, pattern, what):
            values = self.get_option(option) or []
            for value in values:
                if not isinstance(value, str) or not pattern.match(value):
                    raise AnsibleParserError("%s: %s must be a list of %s, got %r in %r" % (
                        path, option, what, value, values))

        check_list("subscriptions", SUBSCRIPTION_PATTERN, "subscription ids (GUIDs)")
        check_list("resource_groups", RESOURCE_GROUP_PATTERN,
                   "resource group names (1-90 letters, digits, _ ( ) - . ; not ending with a period)")
        check_list("locations", LOCATION_PATTERN, "Azure location names such as westeurope")
        tags = self.get_option("tags") or {}
        for key, value in tags.items():
            if not isinstance(key, str) or not key or not (value is None or isinstance(value, (str, int, float))):
                raise AnsibleParserError("%s: tags must map tag names to a value (a string) or null (any value), "
                                         "got %r: %r" % (path, key, value))
        if tags and not self.get_option("list_model"):
            raise AnsibleParserError("%s: tags filters need list_model=true (only the model list returns tags)"
                                     % path)
        try:
            self._auth = self._auth_params(config)
        except AzureAuthError as exc:
            raise AnsibleParserError("%s: %s: %s" % (path, self.NAME, exc.msg))

    def _auth_params(self, config):
        """The auth options set in the file, validated as a module validates them; the others fall back to their
        AZURE_* variables, then to their defaults (the option defaults that ansible-doc shows would hide the
        variables if taken from the plugin's configuration)."""
        params = validate_auth_options(dict((key, config[key]) for key in AZURE_AUTH_ARGSPEC if key in config),
                                       self.NAME)
        subscriptions = self._subscriptions()
        if not params.get("subscription_id") and subscriptions:
            # The lists name their subscriptions; the connection only needs one to be built.
            params["subscription_id"] = subscriptions[0]
        return params

    def _subscriptions(self):
        return unique_subscriptions(self.get_option("subscriptions"))

    def get_cache_key(self, path):
        """The file's path and every option that changes what the lists return (see the notes in DOCUMENTATION).
        Never a secret: the client secret and certificate password are not part of it."""
        params = getattr(self, "_auth", None) or {}
        inputs = {
            "subscriptions": sorted(self._subscriptions()) or [_lower(params.get("subscription_id"))],
            "resource_groups": sorted(set(_lower(group) for group in self.get_option("resource_groups") or [])),
            "locations": sorted(set(_lower(location).replace(" ", "")
                                    for location in self.get_option("locations") or [])),
            "tags": sorted((str(key), None if value in (None, "") else str(value))
                           for key, value in (self.get_option("tags") or {}).items()),
            "include_vmss_instances": bool(self.get_option("include_vmss_instances")),
            "list_model": bool(self.get_option("list_model")),
            "cloud_environment": params.get("cloud_environment"),
            "auth_source": params.get("auth_source"),
            "profile": params.get("profile"),
            "client_id": _lower(params.get("client_id") or os.environ.get("AZURE_CLIENT_ID")),
            "tenant": _lower(params.get("tenant") or os.environ.get("AZURE_TENANT")),
        }
        digest = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode("utf-8")).hexdigest()[:16]
        return "%s_%s" % (super(InventoryModule, self).get_cache_key(path), digest)

    # ---- reading Azure ---------------------------------------------------------------------------------------
    def _connections(self):
        """One connection per subscription, sharing one credential (one token for all)."""
        if not HAS_AZURE:
            raise AnsibleParserError("%s needs the azure-identity, azure-core and azure-mgmt-compute Python packages"
                                     % self.NAME)
        try:
            connection = AzureConnection(self._auth, pacing=True)
        except AzureAuthError as exc:
            raise AnsibleParserError("%s: %s" % (self.NAME, exc.msg))
        # One token before the parallel lists (each would fetch its own), and a clear error when there is none.
        try:
            connection.get_token()
        except AzureError as exc:
            raise AnsibleParserError("%s: no usable Azure credentials (auth_source=%s): %s" % (
                self.NAME, connection.auth_source, exc))
        connections = []
        for subscription in self._subscriptions() or [_lower(connection.subscription_id)]:
            # Same credential, endpoints and pacing; only the subscription of the SDK clients differs.
            connections.append(connection.for_subscription(subscription))
        return connections

    def _list(self, connection, what, path, query=None):
        """Every item of an ARM list, page after page, as REST JSON (no SDK models: building and serializing them
        back cost about 70 ms of CPU per page of 50 VMs, the bulk of a cold read of thousands)."""
        params = {"api-version": COMPUTE_API_VERSION}
        params.update(query or {})
        try:
            items = []
            for page in connection.list_pages("compute", path, params):
                items.extend(page)
            return items
        except AzureError as exc:
            raise AnsibleParserError("%s: %s" % (self.NAME, describe_azure_error(
                exc, "listing the %s of subscription" % what, connection.subscription_id)))

    def _start_subscription(self, connection, pool):
        """Submit one subscription's lists (each read page by page in its own thread); returns their futures."""
        base = "/subscriptions/%s/providers/Microsoft.Compute" % connection.subscription_id
        status = pool.submit(self._list, connection, "VMs (statusOnly)", base + "/virtualMachines",
                             {"statusOnly": "true"})
        model = pool.submit(self._list, connection, "VMs", base + "/virtualMachines") \
            if self.get_option("list_model") else None
        scale_sets = pool.submit(self._list, connection, "scale sets", base + "/virtualMachineScaleSets") \
            if self.get_option("include_vmss_instances") else None
        return connection, status, model, scale_sets

    def _read_subscription(self, started, pool):
        """Every host record of one subscription, from its lists started by _start_subscription."""
        connection, status, model, scale_sets = started
        sub = connection.subscription_id
        models = dict((_lower(vm.get("id")), vm) for vm in model.result()) if model else {}
        records = []
        for vm in status.result():
            records.append(host_record(vm, models.pop(_lower(vm.get("id")), None) if model else None, sub))
        # A VM created between the two lists: known from the model only (no run-time status yet).
        records.extend(host_record(None, vm, sub) for vm in models.values())
        if scale_sets:
            wanted = [ss for ss in scale_sets.result() if self._wanted_scale_set(ss)]
            instance_lists = [(ss, pool.submit(self._list, connection, "instances of scale set %s" % ss.get("name"),
                                               *self._instances_list(ss))) for ss in wanted]
            by_id = dict((_lower(record["azure_id"]), record) for record in records)
            for ss, instances in instance_lists:
                for instance in instances.result():
                    if is_flexible(ss):
                        # Its instances are VMs, already read above: the list only names them.
                        record = by_id.get(_lower(instance.get("id")))
                        if record is not None:
                            flexible_instance_of(record, ss.get("name"))
                    else:
                        records.append(host_record(instance, instance, sub, scale_set=ss))
        return records

    @staticmethod
    def _instances_list(scale_set):
        """(path, query) of a scale set's instances. Uniform: the scale set's instances with their instance views.
        Flexible: its VMs, named by the VM List's scale-set filter (their status comes from the statusOnly list
        already read)."""
        ids = parse_resource_id(scale_set.get("id"))
        group = "/subscriptions/%s/resourceGroups/%s/providers/Microsoft.Compute" % (
            ids.get("subscriptions"), ids.get("resourcegroups"))
        if is_flexible(scale_set):
            return group + "/virtualMachines", {"$filter": "'virtualMachineScaleSet/id' eq '%s'" % scale_set.get("id")}
        return "%s/virtualMachineScaleSets/%s/virtualMachines" % (group, scale_set.get("name")), {
            "$expand": "instanceView"}

    def _wanted_scale_set(self, scale_set):
        """Scale sets that pass the filters."""
        probe = {"azure_resource_group": parse_resource_id(scale_set.get("id")).get("resourcegroups"),
                 "azure_location": scale_set.get("location"), "azure_tags": public_tags(scale_set.get("tags"))}
        return self._wanted(probe, scale_set.get("tags"))

    def _wanted(self, record, raw_tags=None):
        groups = set(_lower(group) for group in self.get_option("resource_groups") or [])
        if groups and _lower(record["azure_resource_group"]) not in groups:
            return False
        locations = set(_lower(location).replace(" ", "") for location in self.get_option("locations") or [])
        if locations and _lower(record["azure_location"]).replace(" ", "") not in locations:
            return False
        tags = record["azure_tags"] or {}
        for key, value in (self.get_option("tags") or {}).items():
            if key not in tags or (value not in (None, "") and str(tags[key]) != str(value)):
                return False
        return True

    def _fetch(self):
        """Every subscription's lists at once, each subscription within its own budget: the connections share one
        throttling scheduler, whose buckets are per subscription (ARM reads, Compute's High Cost Get)."""
        connections = self._connections()
        lists = 1 + bool(self.get_option("list_model")) + bool(self.get_option("include_vmss_instances"))
        with ThreadPoolExecutor(max_workers=min(MAX_THREADS, max(8, lists * len(connections)))) as pool:
            started = [self._start_subscription(connection, pool) for connection in connections]
            records = []
            for subscription in started:
                records.extend(self._read_subscription(subscription, pool))
        return [record for record in records if self._wanted(record)]

    # ---- populating ------------------------------------------------------------------------------------------
    def _populate(self, records):
        strict = self.get_option("strict")
        compose, groups, keyed_groups = (self.get_option(option) for option in ("compose", "groups", "keyed_groups"))
        prefix = self.get_option("group_prefix")
        records = sorted(records, key=lambda item: _lower(item["azure_id"]))
        mode = self.get_option("hostnames")
        names, renamed = host_names(records, mode)
        for shared, members in renamed:
            display.warning("%s: %d hosts would share the host name %s, so each is named by its next longer form "
                            "(hostnames: %s; resource group, then subscription): %s" % (
                                self.NAME, len(members), shared, mode,
                                ", ".join("%s -> %s" % member for member in members)))
        # Each group's name made safe and the group added once, not once per member (10,000 hosts are in 50,000
        # memberships); inventory is Ansible's proxy, its attributes looked up once.
        added = {}
        add_group, add_child, add_host = self.inventory.add_group, self.inventory.add_child, self.inventory.add_host
        set_variable = self.inventory.set_variable

        def group(name):
            safe = added.get(name)
            if safe is None:
                safe = added[name] = add_group(to_safe_group_name((prefix + name).lower(), force=True, silent=True))
            return safe

        for record, host_name in zip(records, names):
            host = add_host(host_name)
            for key, value in record.items():
                set_variable(host, key, value)
            for name in plugin_groups(record):
                add_child(group(name), host)
            if compose or groups or keyed_groups:
                variables = self.inventory.get_host(host).get_vars()
                self._set_composite_vars(compose, variables, host, strict=strict)
                self._add_host_to_composed_groups(groups, variables, host, strict=strict)
                self._add_host_to_keyed_groups(keyed_groups, variables, host, strict=strict)

    def parse(self, inventory, loader, path, cache=True):
        super(InventoryModule, self).parse(inventory, loader, path, cache)
        self._config = config = self._read_config_data(path)
        self._validate(config, path)
        cache_key = self.get_cache_key(path)
        use_cache = self.get_option("cache") and cache
        update_cache = self.get_option("cache") and not cache
        records = None
        if use_cache:
            try:
                records = cached_records(self._cache[cache_key])
            except KeyError:
                update_cache = True
        if records is None:
            records = self._fetch()
        if update_cache:
            # One JSON document, not the records themselves: the cache's own encoder would walk every value of
            # thousands of records, and ansible-core copies what it stored (copy.deepcopy); a string costs neither.
            self._cache[cache_key] = json.dumps(records, separators=(",", ":"))
        self._populate(records)
