# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Minimal JSON stdout callback for the tests (ansible-core ships no json callback; ansible.posix does).

Output shape follows ansible.posix.json: {"plays": [{"play": {...}, "tasks": [{"task": {...}, "hosts": {...}}]}],
"stats": {host: {"ok": .., "changed": .., "failures": .., "unreachable": .., "skipped": ..}}}.
"""
from __future__ import absolute_import, division, print_function
__metaclass__ = type

import json

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = '''
name: json_results
type: stdout
short_description: JSON results for the tests
description: Prints all results as one JSON document at the end of the run.
'''


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = 'stdout'
    CALLBACK_NAME = 'json_results'

    def __init__(self, display=None):
        super(CallbackModule, self).__init__(display)
        self.results = []

    def v2_playbook_on_play_start(self, play):
        self.results.append({'play': {'name': play.get_name(), 'id': str(play._uuid)}, 'tasks': []})

    def _task_start(self, task):
        self.results[-1]['tasks'].append({'task': {'name': task.name or task.get_name(), 'full_name': task.get_name(),
                                                   'id': str(task._uuid)}, 'hosts': {}})

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._task_start(task)

    def v2_playbook_on_handler_task_start(self, task):
        self._task_start(task)

    def _record(self, result, **flags):
        host = result._host.get_name()
        data = dict(result._result)
        data.update(flags)
        try:
            json.dumps(data, default=str)
        except Exception:  # pylint: disable=broad-except
            data = {'repr': repr(data)}
        if self.results and self.results[-1]['tasks']:
            self.results[-1]['tasks'][-1]['hosts'][host] = data

    def v2_runner_on_ok(self, result, **kwargs):
        self._record(result)

    def v2_runner_on_failed(self, result, ignore_errors=False, **kwargs):
        self._record(result, failed=True)

    def v2_runner_on_unreachable(self, result, **kwargs):
        self._record(result, unreachable=True)

    def v2_runner_on_skipped(self, result, **kwargs):
        self._record(result, skipped=True)

    def v2_playbook_on_stats(self, stats):
        summary = {}
        for host in sorted(stats.processed.keys()):
            summary[host] = stats.summarize(host)
        self._display.display(json.dumps({'plays': self.results, 'stats': summary}, default=str, indent=2,
                                         sort_keys=True))
