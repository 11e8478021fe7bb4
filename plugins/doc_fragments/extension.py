# -*- coding: utf-8 -*-
# Copyright: azure_vm.extensions contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):

    # The extension definition shared by vm_extension and vmss_extension (module_utils/extension_model.py).
    DOCUMENTATION = r"""
options:
  publisher:
    description:
      - Extension publisher, for example C(Microsoft.Azure.Extensions). Required with O(state=present).
      - Cannot change on an existing extension; delete it first or use the C(rerun_extension) role.
    type: str
  type:
    description:
      - Extension type, for example C(CustomScript). Required with O(state=present). Casing differences that
        Azure normalizes are not changes.
    type: str
  type_handler_version:
    description:
      - Handler version as C(major.minor), for example C(2.1). Required with O(state=present). Azure refuses any
        other form (C(2), C(2.1.6)), so the module does too, before anything is written; the patch the handler
        runs is Azure's choice (O(auto_upgrade_minor_version)) and shows in the instance view.
      - V(latest) picks the highest version in the region from the extension image catalogue (numeric order) and
        sends its major.minor.
      - A string. Quote it in YAML (V('2.10')); an unquoted 2.10 is the number 2.1 and is refused.
    type: raw
  settings:
    description:
      - Public settings (JSON object), compared exactly as ARM stores JSON. Key order does not matter; keys, types
        and values do (V("1.10") and V("1.1"), V("0042") and V(42), V("True") and V(true) all differ).
      - The one exception is what Ansible templating does to numbers and booleans - a string equals a number or
        boolean when it is exactly its JSON text (V("30") equals V(30), V("true") equals V(true)).
    type: dict
  protected_settings:
    description:
      - Protected settings, encrypted by Azure and never returned by it. Never logged, shown masked in diffs.
      - A change of these alone is detected through O(protected_settings_fingerprint), over their exact JSON (no
        coercion at all - V("0042") and V("42") are different secrets).
      - Mutually exclusive with O(protected_settings_from_key_vault).
    type: dict
  protected_settings_from_key_vault:
    description:
      - Protected settings held in Key Vault, referenced instead of passed - a dict with C(secret_url) (URL of the
        Key Vault secret) and C(source_vault_id) (resource id of the Key Vault).
      - ARM's own shape, C(secretUrl) and C(sourceVault.id), as the info modules return it, is accepted too.
    type: dict
  auto_upgrade_minor_version:
    description: Let Azure use the newest minor version of O(type_handler_version) at deployment (recommended).
    type: bool
    default: true
  enable_automatic_upgrade:
    description:
      - Let the platform upgrade the extension automatically when a new version is published (automatic
        extension upgrade; on a scale set Azure rolls it through in batches of 20%). Not managed when omitted.
    type: bool
  force_update_tag:
    description: A string that, when changed, makes Azure run the handler again even if nothing else changed.
    type: str
  rerun:
    description:
      - Run the handler again now, by sending a new unique O(force_update_tag). Always reports a change.
      - Mutually exclusive with O(force_update_tag).
    type: bool
    default: false
  provision_after_extensions:
    description: Extensions that must be provisioned before this one (extension sequencing).
    type: list
    elements: str
  id:
    description:
      - Returned by the info modules; accepted and ignored, so that an info module's extension entry can be passed
        back unchanged.
    type: str
  provisioning_state:
    description: Returned by the info modules; accepted and ignored.
    type: str
  instance_view:
    description: Returned by the info modules; accepted and ignored.
    type: dict
"""
