# -*- coding: utf-8 -*-
# Copyright: azure_vm.extensions contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One inventory host's outcome from a registered vm_extension_fleet result (the extensions role's report task).

It runs once per host, so it is kept to a dictionary lookup: the fleet result is read from the task's variables
by name, never through a template, which would copy the result of every host for each host's report.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.errors import AnsibleActionFail
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.plugins.action import ActionBase

ARGUMENT_SPEC = {
    "fleet_var": {"type": "str", "required": True},
    "host": {"type": "str"},
}


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(ARGUMENT_SPEC)
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        super(ActionModule, self).run(tmp, task_vars)
        task_vars = task_vars or {}
        validation = ArgumentSpecValidator(ARGUMENT_SPEC).validate(self._task.args)
        if validation.error_messages:
            raise AnsibleActionFail("vm_extension_fleet_report: %s" % "; ".join(validation.error_messages))
        args = validation.validated_parameters
        host = args["host"] or task_vars.get("inventory_hostname")
        fleet = task_vars.get(args["fleet_var"])
        if not isinstance(fleet, dict) or not isinstance(fleet.get("hosts"), dict):
            raise AnsibleActionFail(
                "fleet_var: %r does not name a registered azure_vm.extensions.vm_extension_fleet result (a "
                "dictionary with 'hosts'); register the fleet task and give its name" % args["fleet_var"])
        outcome = fleet["hosts"].get(host)
        if outcome is None:
            # Not one of the fleet task's targets: localhost, when a play on it converged a group from one task.
            # Skipped here rather than by a `when` on the task: on ansible-core 2.19 a conditional that names a
            # variable costs each host about 13 ms of CPU, as much again as the report itself.
            return {"skipped": True, "changed": False,
                    "msg": "%s is not among the fleet task's targets (%d hosts: %s)" % (
                        host, len(fleet["hosts"]), ", ".join(sorted(fleet["hosts"])[:5]) + (
                            ", ..." if len(fleet["hosts"]) > 5 else ""))}
        # What happened to this host's VM; the state of its extensions stays in the registered fleet result
        # (hosts[host].extensions), where it is not copied through a worker and the callbacks once more per host.
        result = dict((key, value) for key, value in outcome.items() if key != "extensions")
        result["changed"] = bool(outcome.get("changed"))
        result["failed"] = bool(outcome.get("failed"))
        return result
