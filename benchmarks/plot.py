"""Bar chart of a fleet_bench.py report (JSON on stdin) -> PNG. Runs in .build/bench-venv (matplotlib)."""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

report = json.load(sys.stdin)
names, converge, unchanged = [], [], []
for scenario in report["scenarios"]:
    names.append(scenario["name"].replace(" (", "\n("))
    converge.append(scenario["converge"]["wall_s"])
    unchanged.append(scenario["no_change"]["wall_s"])
fig, ax = plt.subplots(figsize=(9, 4.8))
x = range(len(names))
ax.bar([i - 0.2 for i in x], converge, width=0.4, label="first converge")
ax.bar([i + 0.2 for i in x], unchanged, width=0.4, label="no-change run")
limit = report["physical_limit_s"]
ax.axhline(limit, color="black", linestyle="--", linewidth=1, label="physical limit K x T = %g s" % limit)
ax.axhline(1.3 * limit, color="grey", linestyle=":", linewidth=1, label="1.3 x limit")
for i, value in enumerate(converge):
    ax.text(i - 0.2, value, "%.0f s" % value, ha="center", va="bottom", fontsize=8)
ax.set_xticks(list(x))
ax.set_xticklabels(names, fontsize=8)
ax.set_ylabel("wall time (s)")
p = report["parameters"]
ax.set_title("%d VMs x %d extensions, handler %g s (local ARM emulator)"
             % (p["vms"], p["extensions"], p["handler_seconds"]))
ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(sys.argv[1], dpi=110)
