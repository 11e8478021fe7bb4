# -*- coding: utf-8 -*-
# Copyright: azure_vm.extensions contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):

    # Modules that change something in Azure (a module's own attribute entry overrides the one here).
    DOCUMENTATION = r"""
attributes:
  check_mode:
    support: full
    description: Reads what is in Azure and reports what would change; sends no write.
  diff_mode:
    support: full
    description: Shows the state before and after.
"""

    # Modules that only read.
    INFO = r"""
attributes:
  check_mode:
    support: full
    description: Read-only; runs the same in check mode.
  diff_mode:
    support: none
    description: Read-only.
"""
