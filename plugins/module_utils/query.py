# -*- coding: utf-8 -*-
# Copyright: azure_vm.extensions contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The `query` option of the info modules: a JMESPath expression, as `az ... --query` takes."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import traceback

from ansible.module_utils.basic import missing_required_lib
from ansible_collections.azure_vm.extensions.plugins.module_utils.errors import AzureOperationError


def apply_query(expression, data):
    """Evaluate expression over data; raises AzureOperationError naming the option for a bad expression.
    jmespath is imported here, when a task gives a query: every module imports this file (the module wrapper
    applies the option), and a task without a query should not pay for the import."""
    try:
        import jmespath  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise AzureOperationError(missing_required_lib("jmespath"), import_error=traceback.format_exc())
    try:
        return jmespath.search(expression, data)
    except jmespath.exceptions.JMESPathError as exc:
        raise AzureOperationError("query: invalid JMESPath expression %r: %s" % (expression, exc))
