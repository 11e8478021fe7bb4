# -*- coding: utf-8 -*-
# Copyright: azure_vm.extensions contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):

    # The info modules' query option (module_utils/module.py applies it to the module's result).
    DOCUMENTATION = r"""
options:
  query:
    description:
      - A JMESPath expression applied to the module's result, as C(az ... --query) does; it sees the result's
        top-level keys (see the return values). Its value is returned as C(query_result).
    type: str
"""
