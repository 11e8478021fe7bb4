# -*- coding: utf-8 -*-
# Copyright: azure_vm.extensions contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The `query` option of the info modules: a JMESPath expression, as `az ... --query` takes."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import traceback

from ansible.module_utils.basic import missing_required_lib
from ansible_collections.azure_vm.extensions.plugins.module_utils.errors import AzureOperationError

try:
    import jmespath

    JMESPATH_IMPORT_ERROR = None
except ImportError:
    jmespath = None
    JMESPATH_IMPORT_ERROR = traceback.format_exc()


def apply_query(expression, data):
    """Evaluate expression over data; raises AzureOperationError naming the option for a bad expression."""
    if jmespath is None:
        raise AzureOperationError(missing_required_lib("jmespath"), import_error=JMESPATH_IMPORT_ERROR)
    try:
        return jmespath.search(expression, data)
    except jmespath.exceptions.JMESPathError as exc:
        raise AzureOperationError("query: invalid JMESPath expression %r: %s" % (expression, exc))
