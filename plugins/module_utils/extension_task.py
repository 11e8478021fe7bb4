# -*- coding: utf-8 -*-
# Copyright: azure_vm.extensions contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the vm_extension and vmss_extension modules do with their parameters: a rerun or a restore
(module_utils/extension_rerun.py) when the task asks for one, else the extension converged to the declared
state by its state class. The modules are this call, their argument spec and their documentation."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.azure_vm.extensions.plugins.module_utils.extension_model import (
    EXTENSION_OPTION_RULES,
    default_timeout,
    validate_extension_options,
)
from ansible_collections.azure_vm.extensions.plugins.module_utils.extension_rerun import (
    RERUN_OPTIONS,
    extension_rerun,
    rerun_option_rules,
)
from ansible_collections.azure_vm.extensions.plugins.module_utils.vm_extension_state import (
    VM_EXTENSION_OPTIONS,
    VmExtension,
)
from ansible_collections.azure_vm.extensions.plugins.module_utils.vmss_extension_state import (
    VMSS_EXTENSION_OPTIONS,
    VmssExtension,
    validate_vmss_options,
)
from ansible_collections.azure_vm.extensions.plugins.module_utils.waiter import Deadline

# The argument specs and option rules of the two modules (the rerun's options included).
VM_TASK_OPTIONS = dict(VM_EXTENSION_OPTIONS, vm_name=dict(type="str", required=True), **RERUN_OPTIONS)
VMSS_TASK_OPTIONS = dict(VMSS_EXTENSION_OPTIONS, **RERUN_OPTIONS)
TASK_OPTION_RULES = rerun_option_rules(EXTENSION_OPTION_RULES)


def vm_state(azure, deadline):
    params = azure.params
    return VmExtension(azure.connection, params["resource_group"], params["vm_name"], params["name"], deadline,
                       azure.check_mode, azure.progress)


def vmss_state(azure, deadline):
    params = azure.params
    return VmssExtension(azure.connection, params["resource_group"], params["vmss_name"], params["name"],
                         deadline=deadline, timeout=params["timeout"], check_mode=azure.check_mode,
                         progress=azure.progress, upgrade_instances=params["upgrade_instances"],
                         batch_percent=params["batch_percent"],
                         max_unhealthy_percent=params["max_unhealthy_percent"],
                         rolling_upgrade=params["rolling_upgrade"])


KINDS = {"vm": (vm_state, validate_extension_options), "vmss": (vmss_state, validate_vmss_options)}


def run(azure, kind):
    """The module's result for kind "vm" or "vmss"; raises AzureOperationError."""
    make, validate = KINDS[kind]
    rerun = extension_rerun(azure, kind, lambda deadline: make(azure, deadline), validate)
    if rerun:
        return rerun.run()
    params = azure.params
    validate(params)
    # The VM's clock starts now; a scale set's starts when the extension's type is known (a removal reads it).
    deadline = Deadline(params["timeout"] or default_timeout(params["type"])) if kind == "vm" else None
    state = make(azure, deadline)
    try:
        return state.present(params, params["wait"]) if params["state"] == "present" else state.absent(params["wait"])
    finally:
        for warning in state.warnings:
            azure.warn(warning)
