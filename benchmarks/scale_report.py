"""The "Fleet at Azure's scale" section of docs/benchmarks.md and its plot (an SVG written here, no plotting
library) from a bench_scale.py report (JSON). The rest of docs/benchmarks.md (the 20-VM benchmark) is kept.

    .venv/bin/python benchmarks/scale_report.py .build/bench-scale.json docs/benchmarks.md
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark_report import replace_section  # noqa: E402  (docs/benchmarks.md is shared)

BEGIN = "<!-- bench-scale: begin -->"
END = "<!-- bench-scale: end -->"


def svg_plot(report, path):
    """Accepted extension writes over simulated time, with the write bucket's pace (the floor's) for comparison."""
    runs = report["runs"]
    width, height, left, bottom, top, right = 760, 360, 60, 40, 30, 20
    series = [(name, runs[name]) for name in ("converge", "converge_half_scale") if runs.get(name)]
    if not series:
        return
    n, k = report["parameters"]["vms"], report["parameters"]["extensions"]
    total = n * k
    t_max = max([report["floor_s"] * 1.2] + [run["timeline"][-1][0] for dummy, run in series if run["timeline"]])

    def x(t):
        return left + (width - left - right) * t / t_max

    def y(count):
        return height - bottom - (height - bottom - top) * count / float(total)

    parts = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" '
             'font-size="11">' % (width, height),
             '<rect width="100%" height="100%" fill="white"/>',
             '<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>' % (
                 left, height - bottom, width - right, height - bottom),
             '<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>' % (left, top, left, height - bottom)]
    for i in range(6):
        t = t_max * i / 5
        parts.append('<text x="%.1f" y="%d" text-anchor="middle">%d s</text>' % (x(t), height - bottom + 15, t))
        c = total * i / 5
        parts.append('<text x="%d" y="%.1f" text-anchor="end">%d</text>' % (left - 4, y(c) + 4, c))
    # ARM's write bucket: 200 at once, then 10 per second (the pace the floor assumes)
    pace = [(t, min(total, 200 + 10 * t)) for t in range(0, int(t_max) + 1, 5)]
    parts.append('<polyline fill="none" stroke="#999" stroke-dasharray="4 3" points="%s"/>' % " ".join(
        "%.1f,%.1f" % (x(t), y(c)) for t, c in pace))
    floor = report["floor_s"]
    parts.append('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="black" stroke-dasharray="2 2"/>' % (
        x(floor), top, x(floor), height - bottom))
    parts.append('<text x="%.1f" y="%d">floor %d s</text>' % (x(floor) + 3, top + 12, floor))
    colours = {"converge": "#1f77b4", "converge_half_scale": "#ff7f0e"}
    legend_y = top + 30
    for name, run in series:
        points = " ".join("%.1f,%.1f" % (x(t), y(c)) for t, c, dummy in run["timeline"])
        parts.append('<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>' % (colours[name], points))
        parts.append('<text x="%d" y="%d" fill="%s">%s (time_scale %g): writes accepted; run %.0f s</text>' % (
            left + 10, legend_y, colours[name], name.replace("_", " "), run["time_scale"], run["run_time_s"]))
        legend_y += 14
    parts.append('<text x="%d" y="%d" fill="#777">dashed: ARM write bucket pace (200, then 10/s)</text>' % (
        left + 10, legend_y))
    parts.append('<text x="%d" y="%d" text-anchor="middle">simulated seconds since the first request</text>' % (
        (width + left) / 2, height - 5))
    parts.append("</svg>")
    path.write_text("\n".join(parts) + "\n")


def row(name, run):
    if not run:
        return "| %s | not run | | | | | | |" % name
    cpu = "%.1f s" % run["client_cpu_s"] if run.get("client_cpu_s") is not None else "-"
    if run.get("client_cpu_ms_per_extension") is not None:
        cpu += " = %.1f ms / ext (module %.1f)" % (run["client_cpu_ms_per_extension"],
                                                   run.get("module_cpu_ms_per_extension") or 0)
    return "| %s | %.0f | %.0f x %g + %.0f | %d | %.2f%% | %s | %d | %s |" % (
        name, run["run_time_s"], run["azure_phase_real_s"], run["time_scale"], run["ansible_outside_phase_s"],
        run["arm_requests"], 100 * run["throttled_share"], run["reads_per_completed_extension"],
        run["hosts_failed"], cpu)


def render(report, path):
    path = Path(path)
    svg = path.with_name("benchmarks-scale.svg")
    svg_plot(report, svg)
    p, res, runs = report["parameters"], report["results"], report["runs"]
    lines = [BEGIN, "## Fleet at Azure's scale (`make bench-scale`)", "",
             "%d VMs x %d extensions, handler time %g simulated s, the emulator's `azure` throttle model (the published "
             "ARM and Compute limits) on a clock running %g x real time (the client is told with "
             "`AZURE_VM_EXTENSIONS_RATE_SCALE`), list pages of %d VMs, forks %d, %s CPUs (load average at start "
             "%s). Floor = %.0f s. Run time = Azure phase (first to last ARM request) x time_scale + "
             "ansible-playbook's time outside it, unscaled." % (
                 p["vms"], p["extensions"], p["handler_sim_s"], p["time_scale"], p["page_size"], p["forks"],
                 p["machine"]["cpus"], ", ".join("%.1f" % v for v in p["machine"]["load_at_start"]),
                 report["floor_s"]), "",
             "| run | run time (s) | phase real x scale + outside | ARM requests | 429 share | reads / completed "
             "extension | failed hosts | client CPU (ansible-playbook and modules) |",
             "|---|---|---|---|---|---|---|---|"]
    for key, name in (("converge", "ours, one task, converge"), ("no_change", "ours, one task, no-change"),
                      ("role_converge", "ours, role over the inventory (forks %s), converge" % p.get("role_forks")),
                      ("role_no_change", "ours, role over the inventory, no-change"),
                      ("converge_half_scale", "ours, one task, converge at half the time scale"),
                      ("part_ours", "ours, %s-VM part" % report.get("part", {}).get("vms", "")),
                      ("part_incumbent", "azure.azcollection, same part, forks %d, async fan-out" % p["forks"])):
        if (key.startswith("part_") and "part" not in report) or (key.startswith("role_") and key not in runs) \
                or (key == "converge_half_scale" and key not in runs):
            continue      # --part-vms 0, --skip-role, --skip-half-scale: not run at all
        lines.append(row(name, runs.get(key)))
    lines += ["", "Results: `%s`" % json.dumps(res, sort_keys=True), "", "![scale benchmark](benchmarks-scale.svg)",
              "", END]
    replace_section(path, lines, BEGIN, END)


if __name__ == "__main__":
    render(json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2]))
