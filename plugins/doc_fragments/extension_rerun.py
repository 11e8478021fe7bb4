# -*- coding: utf-8 -*-
# Copyright: azure_vm.extensions contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):

    # The rerun and restore options of vm_extension and vmss_extension (module_utils/extension_rerun.py).
    DOCUMENTATION = r"""
options:
  rerun_method:
    description:
      - How O(rerun=true) runs the handler again.
      - V(force_update_tag) sends the definition with a new unique force-update tag; nothing is deleted and Azure
        keeps the stored protected settings when none are sent.
      - V(delete_reapply) deletes the extension, waits until it is gone (on a scale set the removal is rolled out
        to the instances), puts back exactly the definition read from Azure (every property, including
        V(false) flags, C(provisionAfterExtensions), tags and a Key Vault reference) plus O(protected_settings),
        and waits for the handler (on a scale set, the rollout).
      - Without O(publisher), O(type) and O(type_handler_version), both methods read the definition from Azure
        and reapply it (with O(rerun_overrides)); with them declared, the declared options win where given, as in
        any task. Only a rerun that reads the definition or deletes writes a backup (see O(backup_dir)).
      - "Before the delete, V(delete_reapply) refuses (nothing is written) unless O(protected_settings) is given,
        the extension takes them from Key Vault, or Azure shows there are none: the protected-settings
        fingerprint tag (on the extension of a VM, on the scale set for a scale set) is that of no protected
        settings, or there is no fingerprint tag and O(no_protected_settings=true) says so. Protected settings
        that differ from the fingerprint are refused too. It also refuses when Azure would refuse the reapply
        (VM agent not Ready, another extension failed, too many unhealthy scale-set instances)."
      - "Recovery: when the reapply fails, the error names the backup file and gives the task that restores it
        (O(definition_from_backup)), and the result carries the backup itself in C(rerun.backup) (never a secret; its
        fingerprint masked, so a restore from it cannot check the protected settings and warns).
        When a run stopped between the delete and the reapply, running the same rerun again finds the extension
        absent and its unfinished backup, and restores it - with the same protected settings only: the backup
        keeps their salted fingerprint and a recovery with other ones is refused. In check mode it reports
        C(outcome=planned) and writes nothing."
      - "The reapply keeps the extension's fingerprint choice: an extension without the fingerprint tag gets none
        (unless O(rerun_overrides.protected_settings_fingerprint) says otherwise)."
      - "One rerun of an extension at a time: a second rerun of the same extension (subscription, resource group,
        VM or scale set, name) while one runs from the same O(backup_dir) is refused before any write, naming the
        process that holds it."
    type: str
    choices: [force_update_tag, delete_reapply]
    default: force_update_tag
  rerun_overrides:
    description:
      - With O(rerun=true) and no declared definition, changes to the definition read from Azure, applied on the
        reapply. Keys not given keep their current value; O(rerun_overrides.settings) replaces the public
        settings as a whole. A publisher or type change needs O(rerun_method=delete_reapply).
    type: dict
    suboptions:
      publisher:
        description: Extension publisher.
        type: str
      type:
        description: Extension type.
        type: str
      type_handler_version:
        description: Handler version such as C(2.1), or C(latest).
        type: str
      settings:
        description: Public settings.
        type: dict
      auto_upgrade_minor_version:
        description: Let Azure use the newest minor version at deployment.
        type: bool
      enable_automatic_upgrade:
        description: Automatic extension upgrade.
        type: bool
      suppress_failures:
        description: Suppress handler failures.
        type: bool
      provision_after_extensions:
        description: Extensions that must be provisioned before this one.
        type: list
        elements: str
      protected_settings_from_key_vault:
        description: Protected settings held in Key Vault.
        type: dict
        suboptions:
          secret_url:
            description: URL of the Key Vault secret.
            type: str
            required: true
          source_vault_id:
            description: Resource id of the Key Vault.
            type: str
            required: true
      tags:
        description: VM extensions only. Tags of the extension resource (the fingerprint tag is managed apart).
        type: dict
      protected_settings_fingerprint:
        description:
          - VM extensions only. Overrides O(protected_settings_fingerprint) for the reapply (for the role, which
            passes its overrides here).
        type: bool
  no_protected_settings:
    description:
      - With O(rerun_method=delete_reapply), your word that the extension has no protected settings, so that it
        may be deleted without O(protected_settings). Refused when Azure holds a protected-settings fingerprint
        for it, which proves it has some.
    type: bool
    default: false
  backup_dir:
    description:
      - Directory on the controller for the backup files a rerun writes before any write, one per extension and
        run, named C(<resource group>_<vm or scale set>_<extension>_<UTC timestamp>.json). The directory is made
        mode 0700 and the files 0600.
      - A backup holds the definition read from Azure and the one reapplied, the stage the rerun reached, the
        task that restores it, and the salted fingerprint of the protected settings (the one Azure held, or one
        made of those supplied), so that a recovery can prove it gets the same ones back; never the protected
        settings themselves.
      - The folder also holds one lock file per extension being rerun (C(.<kind>_<subscription>_...lock)); the
        kernel releases a lock when its process ends, also when it is killed. Jobs that may rerun the same
        extension (AWX) should share one folder on a persistent volume (the collection's C(docs/awx.md)).
      - Defaults to C(~/.ansible/azure_vm_extensions/backups) of the user running the task, outside the
        collection, or the environment variable E(AZURE_VM_EXTENSIONS_BACKUP_DIR). A rerun looks here for the
        unfinished backup of an absent extension.
    type: path
  definition_from_backup:
    description:
      - A backup written by a rerun - the path of its file, or the backup itself as a failed rerun returns it in
        C(rerun.backup) (for example from an AWX job's artifacts, where the job's disk is gone). With
        O(state=present), the extension gets the definition saved in it (add O(protected_settings) when the backup
        says it had some; they are never saved, and must be the same ones, which the backup's salted fingerprint
        checks), as an ordinary task would, so a second run reports no change.
      - The backup must be of this task's extension (subscription, resource group, VM or scale set, name).
        Excludes O(rerun), O(rerun_overrides) and the definition options O(publisher), O(type),
        O(type_handler_version) and O(settings).
    type: raw
"""
