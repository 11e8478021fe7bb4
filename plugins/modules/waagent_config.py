#!/usr/bin/python
# -*- coding: utf-8 -*-

# Copyright: (c) 2025, azure_vm.extensions contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
---
module: waagent_config
short_description: Set and remove options in the Azure Linux guest agent's waagent.conf
version_added: 0.1.0
description:
  - Edits the configuration file of the Azure Linux VM agent (WALinuxAgent, C(waagent)) on the guest, following the
    agent's own parsing rules so that what is written is exactly what the agent reads.
  - A line is a comment only when C(#) is its first character; keys are case-sensitive; a value is cut at the first
    C(#) and stripped of double quotes and spaces; the literal C(None) means "use the default"; the last occurrence
    of a repeated key wins.
  - Comments, the order of lines and keys that are not managed are kept. Every occurrence of a duplicated key is
    replaced. A key that is not in the file yet is added after its commented-out example (C(#Key=...)) when there is
    one, else at the end of the file.
  - Every value is validated against the schema of the agent's known options before anything is written. The agent
    itself never reports a bad value (C(yes) for a boolean or C(ten) for an integer silently falls back to the
    default), so this module refuses them. An invalid value fails with the option, the value and what is allowed,
    and the file is left untouched.
  - Keys the agent no longer reads (C(Provisioning.Enabled), C(Provisioning.UseCloudInit), C(LBProbeResponder),
    C(Role.*), C(CGroups.EnforceLimits), C(CGroups.Excluded), C(Network.Interface), C(OS.SshdConfigPath)) are
    accepted with a deprecation warning.
  - When O(path) is a symbolic link (SUSE links C(/etc/waagent.conf) to a flavour file) the link's target is
    written, atomically, keeping its mode and owner.
  - The module does not restart the agent; notify a handler when RV(changed) is true.
  - Uses only the Python standard library on the target.
author:
  - azure_vm.extensions maintainers (@azure-vm)
options:
  path:
    description:
      - Path of the agent's configuration file.
      - Symbolic links are followed; the file they point to is the one written.
      - When the file does not exist it is created (mode C(0644)) if there is something to set.
    type: path
    default: /etc/waagent.conf
  settings:
    description:
      - Options to set, as a mapping of option name (case-sensitive, for example C(AutoUpdate.Enabled)) to value.
      - Booleans accept C(true)/C(false) and the usual Ansible spellings (C(yes)/C(no), C(y)/C(n), C(on)/C(off),
        C(1)/C(0)) and are written as C(y) or C(n), the only spelling the agent understands.
      - Integers must be integers. Enumerated options (for example C(Provisioning.Agent),
        C(Provisioning.SshHostKeyPairType), C(Provisioning.PasswordCryptId), C(Protocol.EndpointDiscovery)) must be
        one of their values.
      - The string C(None) writes C(None), which makes the agent use its default.
      - A value of C(null) removes every occurrence of the key, like O(remove).
      - A value cannot contain C(#) (the agent would cut it there), a line break, or leading or trailing spaces or
        double quotes (the agent strips them).
    type: dict
    default: {}
  remove:
    description:
      - Options to remove from the file (every occurrence). Commented-out lines are left alone.
      - A key cannot be both set in O(settings) and listed here.
    type: list
    elements: str
    default: []
  allow_unknown:
    description:
      - Allow keys that are not in the module's schema of agent options (for example options of a newer agent).
      - Their values are written as given (booleans as C(y)/C(n)) without type checks.
      - When false, an unknown key fails the task; a key that only differs in case from a known option is reported
        with the correct spelling.
    type: bool
    default: false
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: full
  platform:
    description: Target OS/families that can be operated against.
    support: full
    platforms: posix
notes:
  - The agent re-reads its configuration only when it starts; restart the C(walinuxagent) (Debian, Ubuntu) or
    C(waagent) (other distributions) service after a change.
  - The C(azure_vm.extensions.waagent) role installs the agent, calls this module and restarts the service.
seealso:
  - name: Azure Linux VM Agent overview
    description: The configuration options of waagent.conf.
    link: https://learn.microsoft.com/azure/virtual-machines/extensions/agent-linux
  - name: WALinuxAgent
    description: The agent's source, including its configuration parser.
    link: https://github.com/Azure/WALinuxAgent
'''

EXAMPLES = r'''
- name: Keep the agent updating itself and use cloud-init for provisioning
  azure_vm.extensions.waagent_config:
    settings:
      AutoUpdate.Enabled: true
      Provisioning.Agent: cloud-init
      ResourceDisk.SwapSizeMB: 2048

- name: Route the agent through a proxy
  azure_vm.extensions.waagent_config:
    settings:
      HttpProxy.Host: proxy.example.com
      HttpProxy.Port: 3128
  notify: Restart waagent

- name: Remove keys the agent no longer reads
  azure_vm.extensions.waagent_config:
    remove:
      - Provisioning.Enabled
      - LBProbeResponder

- name: Set an option unknown to this module (newer agent)
  azure_vm.extensions.waagent_config:
    settings:
      Extensions.SomeFutureOption: y
    allow_unknown: true

- name: Edit the SUSE flavour file through the symlink
  azure_vm.extensions.waagent_config:
    path: /etc/waagent.conf
    settings:
      ResourceDisk.Filesystem: btrfs
'''

RETURN = r'''
changed:
  description: Whether the file was (or, in check mode, would be) changed.
  returned: always
  type: bool
  sample: true
path:
  description: The real path of the file written (symbolic links resolved).
  returned: always
  type: str
  sample: /etc/waagent.conf
settings:
  description:
    - The effective options after the change (in check mode, as they would be), read the way the agent reads them
      (last duplicate wins, values cut at C(#), double quotes stripped).
    - A key whose value is the literal C(None) maps to null.
  returned: always
  type: dict
  sample: {"AutoUpdate.Enabled": "y", "Provisioning.Agent": "cloud-init", "ResourceDisk.MountOptions": null}
diff:
  description: The file's text before and after the change.
  returned: when diff mode is on
  type: dict
  contains:
    before:
      description: The text before.
      type: str
    after:
      description: The text after.
      type: str
'''

import os
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.parsing.convert_bool import BOOLEANS_FALSE, BOOLEANS_TRUE
from ansible.module_utils.common.text.converters import to_native, to_text

BOOL = 'bool'
INT = 'int'
STR = 'str'

# option -> (type, allowed values or None). From the agent's conf.py (2.7 to 2.15).
_BOOLEANS = [
    'OS.AllowHTTP', 'OS.EnableFirewall', 'OS.EnableFIPS', 'OS.EnableRDMA', 'OS.UpdateRdmaDriver',
    'OS.CheckRdmaDriver', 'Logs.Verbose', 'Logs.Console', 'Logs.Collect', 'Extensions.Enabled',
    'Extensions.WaitForCloudInit', 'Provisioning.AllowResetSysUser', 'Provisioning.RegenerateSshHostKeyPair',
    'Provisioning.DeleteRootPassword', 'Provisioning.DecodeCustomData', 'Provisioning.ExecuteCustomData',
    'Provisioning.MonitorHostName', 'DetectScvmmEnv', 'ResourceDisk.Format', 'ResourceDisk.EnableSwap',
    'ResourceDisk.EnableSwapEncryption', 'AutoUpdate.Enabled', 'AutoUpdate.UpdateToLatestVersion',
    'EnableOverProvisioning',
    # experimental
    'Debug.CgroupLogMetrics', 'Debug.CgroupDisableOnProcessCheckFailure', 'Debug.CgroupDisableOnQuotaCheckFailure',
    'Debug.EnableFastTrack', 'Debug.EnableGAVersioning', 'Debug.EnableAgentMemoryUsageCheck',
    'Debug.EnableCgroupV2ResourceLimiting', 'Debug.EnableExtensionPolicy', 'Debug.FirewallRulesLogPeriodEnabled',
]
_STRINGS = [
    'Lib.Dir', 'DVD.MountPoint', 'Pid.File', 'Extension.LogDir', 'OS.OpensslPath', 'OS.SshDir', 'OS.HomeDir',
    'OS.PasswordPath', 'OS.SudoersDir', 'OS.RootDeviceScsiTimeout', 'HttpProxy.Host', 'ResourceDisk.MountPoint',
    'ResourceDisk.MountOptions', 'ResourceDisk.Filesystem', 'AutoUpdate.GAFamily', 'Policy.PolicyFilePath',
    # experimental
    'Debug.CgroupMonitorExpiryTime', 'Debug.CgroupMonitorExtensionName',
]
_INTEGERS = [
    'Extensions.GoalStatePeriod', 'Extensions.InitialGoalStatePeriod', 'Extensions.GoalStateHistoryCleanupPeriod',
    'Extensions.WaitForCloudInitTimeout', 'OS.EnableFirewallPeriod', 'OS.RemovePersistentNetRulesPeriod',
    'OS.RootDeviceScsiTimeoutPeriod', 'OS.MonitorDhcpClientRestartPeriod', 'OS.SshClientAliveInterval',
    'Provisioning.MonitorHostNamePeriod', 'Provisioning.PasswordCryptSaltLength', 'HttpProxy.Port',
    'ResourceDisk.SwapSizeMB', 'Autoupdate.Frequency', 'Logs.CollectPeriod',
    # experimental
    'Debug.CgroupCheckPeriod', 'Debug.AgentCpuQuota', 'Debug.AgentCpuThrottledTimeThreshold',
    'Debug.AgentMemoryQuota', 'Debug.EtpCollectionPeriod', 'Debug.AutoUpdateHotfixFrequency',
    'Debug.AutoUpdateNormalFrequency', 'Debug.FirewallRulesLogPeriod', 'Debug.LogCollectorInitialDelay',
    'Debug.SelfUpdateHotfixFrequency', 'Debug.SelfUpdateRegularFrequency',
]
ENUMS = {
    'Provisioning.Agent': ['auto', 'waagent', 'cloud-init', 'disabled'],
    'Provisioning.SshHostKeyPairType': ['rsa', 'dsa', 'ecdsa', 'ed25519', 'auto'],
    'Provisioning.PasswordCryptId': ['1', '2a', '5', '6'],
    'Protocol.EndpointDiscovery': ['dhcp', 'static'],
}

SCHEMA = {}
for _key in _BOOLEANS:
    SCHEMA[_key] = (BOOL, None)
for _key in _STRINGS:
    SCHEMA[_key] = (STR, None)
for _key in _INTEGERS:
    SCHEMA[_key] = (INT, None)
for _key, _values in ENUMS.items():
    SCHEMA[_key] = (STR, _values)

# Keys the agent does not read any more (still in shipped files and in Microsoft's documentation).
DEAD_KEYS = {
    'Provisioning.Enabled': (BOOL, None),
    'Provisioning.UseCloudInit': (BOOL, None),
    'LBProbeResponder': (BOOL, None),
    'CGroups.EnforceLimits': (BOOL, None),
    'CGroups.Excluded': (STR, None),
    'Network.Interface': (STR, None),
    'OS.SshdConfigPath': (STR, None),
}
DEAD_PREFIXES = ('Role.',)

AUTO_UPDATE_KEYS = ('AutoUpdate.Enabled', 'AutoUpdate.UpdateToLatestVersion')

DEAD_REPLACEMENTS = {
    'Provisioning.Enabled': 'Provisioning.Agent',
    'Provisioning.UseCloudInit': 'Provisioning.Agent',
}


class ValidationError(ValueError):
    pass


def lookup(key):
    """(type, allowed, dead) of a key, or None when the key is unknown."""
    if key in SCHEMA:
        return SCHEMA[key] + (False,)
    if key in DEAD_KEYS:
        return DEAD_KEYS[key] + (True,)
    if key.startswith(DEAD_PREFIXES):
        return (STR, None, True)
    return None


def _case_hint(key):
    lowered = key.lower()
    for known in list(SCHEMA) + list(DEAD_KEYS):
        if known.lower() == lowered:
            return known
    return None


def validate_key(key):
    if not isinstance(key, str) or not key:
        raise ValidationError('Invalid option name %r: it must be a non-empty string.' % (key,))
    problems = []
    if key != key.strip():
        problems.append('leading or trailing spaces')
    if key.startswith('#'):
        problems.append("a leading '#' (the agent reads the line as a comment)")
    for char, what in (('=', "'='"), ('\n', 'a line break'), ('\r', 'a line break')):
        if char in key:
            problems.append(what)
    if problems:
        raise ValidationError('Invalid option name %r: it contains %s.' % (key, ', '.join(problems)))


def _bool_word(value):
    if isinstance(value, bool):
        return value
    if isinstance(value, bytes):
        value = to_text(value)
    if isinstance(value, str):
        normalized = value.strip().lower()
    elif isinstance(value, int) or isinstance(value, float):
        normalized = value
    else:
        return None
    if normalized in BOOLEANS_TRUE:
        return True
    if normalized in BOOLEANS_FALSE:
        return False
    return None


def _check_text(key, text):
    if '#' in text:
        raise ValidationError("Invalid value for %s: %r; allowed: text without '#' (the agent cuts the value at '#')."
                              % (key, text))
    if '\n' in text or '\r' in text:
        raise ValidationError('Invalid value for %s: %r; allowed: a single line of text.' % (key, text))
    if text != text.strip(' \t"'):
        raise ValidationError('Invalid value for %s: %r; allowed: text without leading or trailing spaces or double '
                              'quotes (the agent strips them).' % (key, text))
    if text == '':
        raise ValidationError('Invalid value for %s: %r; allowed: a non-empty value (use null or remove to delete '
                              'the key, or None for the default).' % (key, text))


def normalize_value(key, value, allow_unknown=False):
    """Return (text to write, warning or None) for key=value, or raise ValidationError."""
    validate_key(key)
    spec = lookup(key)
    warning = None
    if spec is None:
        if not allow_unknown:
            hint = _case_hint(key)
            if hint:
                raise ValidationError('Unknown option %s: option names are case-sensitive, did you mean %s?'
                                      % (key, hint))
            raise ValidationError('Unknown option %s: it is not one of the agent options known to this module; '
                                  'set allow_unknown=true to write it anyway.' % key)
        kind, allowed, dead = (None, None, False)
    else:
        kind, allowed, dead = spec
    if dead:
        replacement = DEAD_REPLACEMENTS.get(key)
        warning = ('%s is deprecated: current agents ignore it%s.'
                   % (key, '; use %s instead' % replacement if replacement else ''))
    if isinstance(value, (dict, list, tuple, set)):
        raise ValidationError('Invalid value for %s: %r; allowed: %s.' % (key, value, describe(kind, allowed)))
    if isinstance(value, bytes):
        value = to_text(value)
    if isinstance(value, str) and value == 'None':
        return 'None', warning
    if kind == BOOL:
        flag = _bool_word(value)
        if flag is None:
            raise ValidationError('Invalid value for %s: %r; allowed: %s.' % (key, value, describe(kind, allowed)))
        return ('y' if flag else 'n'), warning
    if kind == INT:
        if isinstance(value, bool) or isinstance(value, float):
            raise ValidationError('Invalid value for %s: %r; allowed: %s.' % (key, value, describe(kind, allowed)))
        if isinstance(value, int):
            return str(value), warning
        text = to_text(value).strip()
        try:
            number = int(text, 10)
        except ValueError:
            raise ValidationError('Invalid value for %s: %r; allowed: %s.' % (key, value, describe(kind, allowed)))
        return str(number), warning
    # strings, enumerations and unknown keys
    if isinstance(value, bool):
        if kind == STR:
            raise ValidationError('Invalid value for %s: %r; allowed: %s.' % (key, value, describe(kind, allowed)))
        text = 'y' if value else 'n'
    elif isinstance(value, float) and kind == STR:
        raise ValidationError('Invalid value for %s: %r; allowed: %s.' % (key, value, describe(kind, allowed)))
    else:
        text = to_text(value)
    if allowed is not None:
        if text not in allowed:
            raise ValidationError('Invalid value for %s: %r; allowed: %s.' % (key, value, describe(kind, allowed)))
        return text, warning
    _check_text(key, text)
    return text, warning


def describe(kind, allowed):
    if allowed is not None:
        return 'one of %s' % ', '.join(allowed)
    if kind == BOOL:
        return 'a boolean (true/false, yes/no, y/n, on/off, 1/0; written as y or n)'
    if kind == INT:
        return 'an integer'
    if kind == STR:
        return 'a single-line string'
    return 'a scalar value'


# -- parsing, the agent's way --------------------------------------------------------------------------------------

def line_key(line):
    """The key the agent reads from this line, or None (comment, no '=')."""
    if line.startswith('#') or '=' not in line:
        return None
    return line.split('=', 1)[0].strip()


def line_value(line):
    value = line.split('=', 1)[1].split('#')[0].strip('" ').strip()
    return None if value == 'None' else value


def effective_settings(text):
    """What the agent's ConfigurationProvider.load() would hold for this text."""
    values = {}
    for line in text.split('\n'):
        key = line_key(line)
        if key is not None:
            values[key] = line_value(line)
    return values


def _rewrite_line(line, value):
    """Replace the value of a key=value line, keeping the key's spelling, spacing and an end-of-line comment."""
    head, rest = line.split('=', 1)
    comment = ''
    hash_at = rest.find('#')
    if hash_at >= 0:
        comment = rest[hash_at:]
        rest = rest[:hash_at]
    lead = rest[:len(rest) - len(rest.lstrip(' \t'))]
    sep = rest[len(rest.rstrip(' \t\r')):]
    if comment:
        return '%s=%s%s%s%s' % (head, lead, value, sep.replace('\r', '') or ' ', comment)
    return '%s=%s%s%s' % (head, lead, value, sep)


def _commented_example(line, key):
    """True when the line is a commented-out example of key (`#Key=...` or `# Key = ...`)."""
    if not line.startswith('#'):
        return False
    body = line.lstrip('#').strip()
    return '=' in body and body.split('=', 1)[0].strip() == key


def edit_config(text, updates, removals):
    """Return the new text with updates (key -> text value) applied and removals (keys) removed."""
    lines = text.split('\n')
    trailing_newline = len(lines) > 1 and lines[-1] == ''
    if trailing_newline or text == '':
        lines.pop()
    present = set()
    out = []
    for line in lines:
        key = line_key(line)
        if key is not None and key in removals:
            continue
        if key is not None and key in updates:
            present.add(key)
            if line_value(line) != (None if updates[key] == 'None' else updates[key]):
                line = _rewrite_line(line, updates[key])
        out.append(line)
    appended = False
    for key in updates:  # dict order = the order the user gave
        if key in present:
            continue
        new_line = '%s=%s' % (key, updates[key])
        anchor = None
        for index, line in enumerate(out):
            if _commented_example(line, key):
                anchor = index
        if anchor is None:
            out.append(new_line)
        else:
            out.insert(anchor + 1, new_line)
        appended = True
    result = '\n'.join(out)
    if out and (trailing_newline or appended or text == ''):
        result += '\n'
    return result


# -- files --------------------------------------------------------------------------------------------------------

def read_text(path):
    with open(path, 'rb') as handle:
        return handle.read().decode('utf-8', 'surrogateescape')


def write_atomic(path, text, module=None):
    """Write text to path through a temporary file in the same directory and a rename.

    With a module, AnsibleModule.atomic_move() keeps the mode, owner and SELinux context of an existing file;
    without one, mode and owner are copied by hand before os.replace().
    """
    directory = os.path.dirname(path) or '.'
    fd, tmp = tempfile.mkstemp(prefix='.waagent.conf.', dir=directory)
    try:
        with os.fdopen(fd, 'wb') as handle:
            handle.write(text.encode('utf-8', 'surrogateescape'))
            handle.flush()
            os.fsync(handle.fileno())
        if os.path.exists(path):
            st = os.stat(path)
            os.chmod(tmp, st.st_mode & 0o7777)
            if hasattr(os, 'chown'):
                try:
                    os.chown(tmp, st.st_uid, st.st_gid)
                except OSError:
                    pass
        else:
            os.chmod(tmp, 0o644)
        if module is not None:
            module.atomic_move(tmp, path)
        else:
            os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def plan(settings, remove, allow_unknown):
    """Validate everything; return (updates, removals, warnings) or raise ValidationError listing every problem."""
    errors = []
    warnings = []
    updates = {}
    removals = set()
    for key in remove or []:
        try:
            validate_key(key)
        except ValidationError as exc:
            errors.append(to_native(exc))
            continue
        removals.add(key)
    for key, value in (settings or {}).items():
        if value is None:
            try:
                validate_key(key)
                removals.add(key)
            except ValidationError as exc:
                errors.append(to_native(exc))
            continue
        if key in removals:
            errors.append('Option %s is both set and removed.' % key)
            continue
        try:
            text, warning = normalize_value(key, value, allow_unknown)
        except ValidationError as exc:
            errors.append(to_native(exc))
            continue
        updates[key] = text
        if warning:
            warnings.append(warning)
        if key in AUTO_UPDATE_KEYS and text == 'n':
            warnings.append('%s=n stops the agent from updating itself: Microsoft recommends AutoUpdate.Enabled=y so '
                            'that extensions keep working with a current agent.' % key)
    if errors:
        raise ValidationError(' '.join(errors))
    return updates, removals, warnings


def run_module():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type='path', default='/etc/waagent.conf'),
            settings=dict(type='dict', default={}),
            remove=dict(type='list', elements='str', default=[]),
            allow_unknown=dict(type='bool', default=False),
        ),
        supports_check_mode=True,
    )
    path = module.params['path']
    real_path = os.path.realpath(path)
    try:
        updates, removals, warnings = plan(module.params['settings'], module.params['remove'],
                                           module.params['allow_unknown'])
    except ValidationError as exc:
        module.fail_json(msg='%s (%s was not changed)' % (to_native(exc), path), path=real_path)
    for warning in warnings:
        module.warn(warning)

    if os.path.isdir(real_path):
        module.fail_json(msg='%s is a directory' % path, path=real_path)
    exists = os.path.exists(real_path)
    try:
        before = read_text(real_path) if exists else ''
    except (IOError, OSError) as exc:
        module.fail_json(msg='Cannot read %s: %s' % (path, to_native(exc)), path=real_path)
    after = edit_config(before, updates, removals)
    changed = after != before
    if not exists and not updates:
        changed = False
    if changed and not effective_settings(after):
        module.warn('%s has no options left; the agent refuses to start with an empty configuration file.' % path)

    result = dict(changed=changed, path=real_path, settings=effective_settings(after if changed else before))
    if module._diff:
        result['diff'] = dict(before=before, after=after if changed else before,
                              before_header=real_path if exists else '/dev/null', after_header=real_path)
    if changed and not module.check_mode:
        parent = os.path.dirname(real_path)
        if parent and not os.path.isdir(parent):
            module.fail_json(msg='Directory %s does not exist' % parent, path=real_path)
        try:
            write_atomic(real_path, after, module)
        except (IOError, OSError) as exc:
            module.fail_json(msg='Cannot write %s: %s' % (real_path, to_native(exc)), path=real_path)
    module.exit_json(**result)


def main():
    run_module()


if __name__ == '__main__':
    main()
