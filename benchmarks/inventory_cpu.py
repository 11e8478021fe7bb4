"""Where the CPU of one `ansible-inventory --list` over the azure_vms plugin goes (inventory_bench.py --breakdown).

    python benchmarks/inventory_cpu.py OUT.json .venv/bin/ansible-inventory -i SOURCE --list

Runs ansible-inventory in this process with a few of ansible-core's functions wrapped to add up their CPU time
(time.process_time: every thread of the process, unaffected by what else runs on the machine, unlike a profile's
wall clock): the plugin's parse (and in it the lists, Ansible's set_variable with its trust and origin tagging,
add_host/add_child/add_group, the cache read), the cache write, the host variables of every host (--list) and the
JSON output. The plugin's own CPU is its parse less Ansible's calls in it. Writes OUT.json; stdout is the
inventory, as usual.
"""
import inspect
import json
import resource
import runpy
import sys
import time
from collections import defaultdict

TOTALS = defaultdict(float)
CALLS = defaultdict(int)


def install():
    from ansible.cli import inventory as cli
    from ansible.inventory import data, manager
    from ansible.plugins import cache

    for owner, name, label in (
            (manager._InventoryDataWrapper, "set_variable", "Ansible: set_variable (trust and origin tagging)"),
            (data.InventoryData, "add_host", "Ansible: add_host, add_child, add_group"),
            (data.InventoryData, "add_child", "Ansible: add_host, add_child, add_group"),
            (data.InventoryData, "add_group", "Ansible: add_host, add_child, add_group"),
            (cache.CachePluginAdjudicator, "__getitem__", "Ansible: cache read"),
            (cache.CachePluginAdjudicator, "set_cache", "Ansible: cache write"),
            (cli.InventoryCLI, "json_inventory", "Ansible: host variables of every host (--list)"),
            (cli.InventoryCLI, "dump", "Ansible: JSON output (--list)")):
        separate_depth(owner, name, label)
    # The plugin's class exists once the collection loader has loaded it (the `auto` plugin asks the inventory
    # plugin loader for it): wrap it then.
    from ansible.plugins.loader import inventory_loader
    get = inventory_loader.get
    done = []

    def get_and_wrap(*args, **kwargs):
        plugin = get(*args, **kwargs)
        klass = type(plugin)
        if plugin is not None and klass.__module__.endswith("azure_vms") and klass not in done:
            done.append(klass)
            separate_depth(klass, "parse", "plugin parse")
            separate_depth(klass, "_fetch", "plugin: lists (threads; JSON pages) and host records")
        return plugin

    inventory_loader.get = get_and_wrap


def separate_depth(owner, name, label):
    """Wrap owner.name to add the CPU time of its outermost calls to TOTALS[label]."""
    original = getattr(owner, name)
    depth = [0]

    def wrapper(*args, **kwargs):
        if depth[0]:
            return original(*args, **kwargs)
        depth[0] += 1
        started = time.process_time()
        try:
            return original(*args, **kwargs)
        finally:
            TOTALS[label] += time.process_time() - started
            CALLS[label] += 1
            depth[0] -= 1

    static = isinstance(inspect.getattr_static(owner, name), staticmethod)
    setattr(owner, name, staticmethod(wrapper) if static else wrapper)


def main():
    out, script = sys.argv[1], sys.argv[2]
    sys.argv = sys.argv[2:]
    wall = time.monotonic()
    import ansible.cli  # noqa: F401  (ansible-core's own import, before the wrappers)
    install()
    code = 0
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as exc:
        code = exc.code or 0
    finally:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        result = dict(TOTALS)
        result["process CPU"] = usage.ru_utime + usage.ru_stime
        result["wall"] = time.monotonic() - wall
        result["calls"] = dict(CALLS)
        with open(out, "w") as handle:
            json.dump(result, handle, indent=2)
    sys.exit(code)


if __name__ == "__main__":
    main()
