#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: azure_vm.extensions contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: vm_extension_fleet_report
short_description: Report one inventory host's outcome from a registered vm_extension_fleet result
version_added: 0.1.0
description:
  - Turns the entry of one host in the RV(azure_vm.extensions.vm_extension_fleet#module:hosts) of a registered
    M(azure_vm.extensions.vm_extension_fleet) result into that host's own task result, C(changed) and C(failed)
    included, so that the play recap and AWX's host summary show each host's outcome.
  - It is the per-host report task of the C(azure_vm.extensions.extensions) role. It runs on the controller only
    (an action plugin; the host is never contacted) and reads the fleet result from the task's variables by name
    (O(fleet_var)), without templating it, so a report costs the same whatever the number of hosts in the result.
  - A host that is not among the fleet task's targets is skipped, saying so (in the C(extensions) role, localhost
    when a play on it converged a group from one task).
  - The report says what happened to the host's VM. The state of its extensions after the run stays in the fleet
    result, C(<fleet_var>.hosts[<host>].extensions).
  - Nothing is sent to Azure.
author:
  - azure_vm.extensions maintainers (@azure-vm)
options:
  fleet_var:
    description:
      - Name of the variable that holds the registered result of the M(azure_vm.extensions.vm_extension_fleet) task
        (its C(register) name), not the result itself.
    type: str
    required: true
  host:
    description: The host to report, as named in the fleet task's O(azure_vm.extensions.vm_extension_fleet#module:targets[].host).
    type: str
    default: the inventory hostname of the task's host
attributes:
  check_mode:
    support: full
    description: Reports the fleet task's planned outcome in check mode.
  diff_mode:
    support: none
    description: The fleet task shows the differences.
  action:
    support: full
    description: An action plugin; runs on the controller only.
notes:
  - An action plugin with no module code; C(ansible-doc) shows this page.
"""

EXAMPLES = r"""
- name: Converge the VM extensions of every host in the batch
  azure_vm.extensions.vm_extension_fleet:
    targets: "{{ ansible_play_batch | map('extract', hostvars) | list }}"  # see the extensions role for the full form
    ignore_vm_failures: true
  run_once: true
  delegate_to: localhost
  register: extensions_fleet

- name: Report the result of this host's VM
  azure_vm.extensions.vm_extension_fleet_report:
    fleet_var: extensions_fleet
"""

RETURN = r"""
msg:
  description: The host's outcome in plain words (what changed, or why it failed, with the handler's messages).
  returned: always
  type: str
  sample: "changed: monitor installed (AzureMonitorLinuxAgent 1.33)"
vm_name:
  description: The host's VM.
  returned: always
  type: str
resource_group:
  description: The VM's resource group.
  returned: always
  type: str
subscription_id:
  description: The VM's subscription, when the fleet task was given one for it.
  returned: always
  type: str
changes:
  description: Per extension, the properties that changed (protected values hidden).
  returned: always
  type: dict
summary:
  description: One line per operation on the VM.
  returned: always
  type: list
  elements: str
removed:
  description: Extensions removed from the VM (C(exclusive) or C(state=absent)).
  returned: always
  type: list
  elements: str
warnings:
  description: Warnings about this VM.
  returned: always
  type: list
  elements: str
error:
  description: The failure's details (error code, handler status and substatus messages).
  returned: when the host failed
  type: dict
"""
