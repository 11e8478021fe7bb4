#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: azure_vm.extensions contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: vm_extension_fleet
short_description: Converge the declared extensions of many Azure VMs at once, in about the time Azure needs
version_added: 0.1.0
description:
  - Brings every listed VM's extensions to their declared state from one process on the controller. It is what
    the C(azure_vm.extensions.extensions) role runs once per play batch; call it directly to converge a list of
    VMs without an inventory.
  - Each VM is read once (C($expand=instanceView)); a VM whose extensions all match costs that one read.
  - Azure runs one extension operation at a time on a VM and VMs in parallel, so the work goes in rounds; each
    round submits the next pending operation on every VM, then waits for all of them. The total time is about the
    number of operations per VM times the handler time, whatever the number of VMs.
  - Every extension gets exactly the checks and comparison of M(azure_vm.extensions.vm_extension) (VM agent
    Ready, no failed sibling, protected-settings fingerprint, handler status). A VM that fails does not stop the
    others; the task fails when any VM failed, and RV(hosts) tells which and why.
  - Every VM goes on to its next operation as soon as its own is over. Waiting uses single reads while few VMs
    are pending and C(List All statusOnly=true) sweeps when many are.
  - Every request waits for a slot in client-side token buckets seeded from Azure's published limits (ARM per
    subscription and principal, Compute per policy and per VM) and corrected by the
    C(x-ms-ratelimit-remaining-*) headers; a 429's C(Retry-After) is always honoured, and several runs with one
    principal (AWX job slices) share its budget. See the collection's C(docs/scheduler.md).
author:
  - azure_vm.extensions maintainers (@azure-vm)
options:
  targets:
    description:
      - The VMs and what each should have. Holds protected settings, so it is never logged.
    type: list
    elements: dict
    required: true
    suboptions:
      host:
        description: Name that RV(hosts) uses for this VM (the inventory host). Defaults to O(targets[].vm_name).
        type: str
      vm_name:
        description: Name of the virtual machine. Defaults to O(targets[].host).
        type: str
      resource_group:
        description: Resource group of the virtual machine.
        type: str
        required: true
      extensions:
        description:
          - The declared extensions, each a dict of M(azure_vm.extensions.vm_extension)'s options (C(name),
            C(state), C(publisher), C(type), C(type_handler_version), C(settings), C(protected_settings), ...),
            without C(resource_group), C(vm_name) and C(wait). Validated like that module's options.
        type: list
        elements: dict
        default: []
      exclusive:
        description: Also remove the extensions of the VM that are not declared.
        type: bool
        default: false
  poll_interval:
    description:
      - Seconds between two status reads while VMs are waited for. While the waiting VMs are fewer than the pages
        of one C(List All) sweep, each is read with its own GET at most this often; otherwise one
        C(List All statusOnly=true) sweep reads them all this often. Every request also waits for its slot in
        Azure's published throttling budgets.
    type: float
    default: 5
  progress_file:
    description:
      - A file to which a progress line (VMs submitted, succeeded, failed, waiting) is appended about every
        10 seconds while the fleet waits, for C(tail -f). The lines hold counts only. The same lines are returned
        as RV(progress) at C(-v).
    type: path
  max_workers:
    description: Threads that talk to Azure at once.
    type: int
    default: 32
  ignore_vm_failures:
    description:
      - Report failed VMs in RV(hosts) without failing the task (the C(extensions) role does this and fails each
        inventory host on its own). The task still fails when nothing could be done at all, for example on an
        authentication error.
    type: bool
    default: false
  timeout:
    description:
      - Seconds to wait for each extension operation. Defaults to each extension's own C(timeout), else 90 minutes
        for CustomScript, Chef and DSC handlers and 20 minutes for others.
    type: int
extends_documentation_fragment:
  - azure_vm.extensions.azure
attributes:
  check_mode:
    support: full
    description: Reports what would change on each VM and sends no write.
  diff_mode:
    support: none
    description: Per-VM changes are listed in RV(hosts) instead.
"""

EXAMPLES = r"""
- name: Converge two VMs' extensions in one task
  azure_vm.extensions.vm_extension_fleet:
    targets:
      - vm_name: vm-web-01
        resource_group: rg-demo
        extensions:
          - name: AzureMonitorLinuxAgent
            publisher: Microsoft.Azure.Monitor
            type: AzureMonitorLinuxAgent
            type_handler_version: "1.33"
            enable_automatic_upgrade: true
      - vm_name: vm-web-02
        resource_group: rg-demo
        exclusive: true
        extensions: []
  register: fleet
"""

RETURN = r"""
hosts:
  description: Per target (by O(targets[].host)) what happened.
  returned: always
  type: dict
  contains:
    changed:
      description: Whether anything was written for this VM.
      type: bool
    failed:
      description: Whether this VM failed.
      type: bool
    msg:
      description: What changed, or why it failed (with the handler's messages).
      type: str
    changes:
      description: Per extension name, the options that differed.
      type: dict
    removed:
      description: Extensions removed because O(targets[].exclusive) is on.
      type: list
      elements: str
    warnings:
      description: Warnings for this VM.
      type: list
      elements: str
    extensions:
      description: The VM's extensions after the run, as M(azure_vm.extensions.vm_extension_info) returns them.
      type: list
      elements: dict
rounds:
  description: The most operations one VM needed.
  returned: always
  type: int
vm_reads:
  description: Reads sent (one per VM, one per completed operation, and the pages of the list sweeps).
  returned: always
  type: int
waiting:
  description: How the fleet waited.
  returned: always
  type: dict
  contains:
    list_sweeps:
      description: C(List All statusOnly=true) sweeps.
      type: int
    list_pages:
      description: Pages those sweeps read.
      type: int
    single_reads:
      description: GETs of one VM while waiting (and after a sweep showed it settled).
      type: int
progress:
  description: The progress lines written while waiting.
  returned: at C(-v) and higher verbosities
  type: list
  elements: str
elapsed_s:
  description: Seconds the convergence took.
  returned: always
  type: float
throttling:
  description: Requests sent, 429 answers met and the lowest remaining ARM budgets seen.
  returned: always
  type: dict
"""

import time

from ansible_collections.azure_vm.extensions.plugins.module_utils.azure_connection import AzureError, AzureModule
from ansible_collections.azure_vm.extensions.plugins.module_utils.fleet import Fleet, Target


def main():
    azure = AzureModule(
        argument_spec=dict(
            targets=dict(type="list", elements="dict", required=True, no_log=True, options=dict(
                host=dict(type="str"),
                vm_name=dict(type="str"),
                resource_group=dict(type="str", required=True),
                extensions=dict(type="list", elements="dict", default=[]),
                exclusive=dict(type="bool", default=False),
            ), required_one_of=[("host", "vm_name")]),
            poll_interval=dict(type="float", default=5),
            progress_file=dict(type="path"),
            max_workers=dict(type="int", default=32),
            ignore_vm_failures=dict(type="bool", default=False),
            timeout=dict(type="int"),
        ),
        supports_check_mode=True,
    )
    params = azure.params
    for option, low in (("poll_interval", 0.05), ("max_workers", 1), ("timeout", 1)):
        if params[option] is not None and params[option] < low:
            azure.fail("%s must be at least %s; got %r" % (option, low, params[option]))
    targets = [Target(item["host"] or item["vm_name"], item["vm_name"], item["resource_group"], item["extensions"],
                      item["exclusive"]) for item in params["targets"]]
    started = time.time()
    progress_file = params["progress_file"]

    def progress(line):
        azure.progress(line)
        if progress_file:
            with open(progress_file, "a") as handle:
                handle.write("%s %s\n" % (time.strftime("%H:%M:%S"), line))

    fleet = Fleet(azure.connection, targets, azure.check_mode, params["poll_interval"], params["max_workers"],
                  params["timeout"], progress=progress)
    try:
        rounds = fleet.run()
    except AzureError as exc:
        azure.fail_azure(exc, "converging extensions of %d VMs" % len(targets))
    azure.module.no_log_values.update(fleet.no_log_values)
    hosts = dict((target.host, target.result()) for target in targets)
    pipeline = fleet.pipeline
    result = dict(changed=any(target.changed for target in targets), hosts=hosts, rounds=rounds,
                  vm_reads=fleet.reads, elapsed_s=round(time.time() - started, 3),
                  waiting={"list_sweeps": pipeline.sweeps if pipeline else 0,
                           "list_pages": pipeline.list_reads if pipeline else 0,
                           "single_reads": pipeline.single_reads if pipeline else 0},
                  throttling=azure.connection.pacing.scheduler.snapshot())
    failed = [host for host, outcome in hosts.items() if outcome["failed"]]
    if failed and not params["ignore_vm_failures"]:
        azure.fail("%d of %d VMs failed: %s" % (len(failed), len(hosts), "; ".join(
            "%s: %s" % (host, hosts[host]["msg"]) for host in failed)), **result)
    azure.exit(**result)


if __name__ == "__main__":
    main()
