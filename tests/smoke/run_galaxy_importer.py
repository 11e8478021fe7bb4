"""galaxy-importer on the built tarball, as Galaxy runs it on upload (`make galaxy-importer`; CI's `make ci-extra`).

    .venv/bin/python tests/smoke/run_galaxy_importer.py --importer .build/galaxy-importer \
        --config .ci/galaxy-importer.cfg .build/dist/azure_vm-extensions-0.1.0.tar.gz

Fails (exit 1, with the importer's output) unless the import completes with no WARNING or ERROR line, ansible-doc
and ansible-lint both ran (galaxy-importer only warns when they are missing from PATH), and every module and the
inventory plugin got its documentation, which is what Galaxy's page shows.
"""
import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--importer", required=True, help="virtualenv with galaxy-importer")
    parser.add_argument("--config", required=True, help="galaxy-importer.cfg")
    parser.add_argument("tarball")
    args = parser.parse_args(argv)
    venv_bin = Path(args.importer).resolve() / "bin"
    tarball = Path(args.tarball).resolve()
    env = dict(os.environ, GALAXY_IMPORTER_CONFIG=str(Path(args.config).resolve()),
               PATH="%s%s%s" % (venv_bin, os.pathsep, os.environ.get("PATH", "")))
    for key in [k for k in env if k.startswith("ANSIBLE_")]:
        del env[key]  # the importer sets what it needs; a developer's settings must not change its result
    with tempfile.TemporaryDirectory(prefix="galaxy-importer-") as work:  # it writes importer_result.json to cwd
        proc = subprocess.run([str(venv_bin / "python"), "-m", "galaxy_importer.main", str(tarball)], cwd=work,
                              env=env, capture_output=True, text=True, check=False, timeout=1200)
        output = proc.stdout + proc.stderr
        sys.stdout.write(output)
        result_file = Path(work) / "importer_result.json"
        result = json.loads(result_file.read_text()) if result_file.exists() else None
    problems = []
    if proc.returncode != 0 or result is None:
        problems.append("galaxy-importer exited with %d and %s a result" % (
            proc.returncode, "wrote" if result else "did not write"))
    problems += [line for line in output.splitlines() if line.startswith(("WARNING", "ERROR"))]
    for wanted in ("Getting doc strings via ansible-doc", "...ansible-lint run complete",
                   "Importer processing completed successfully"):
        if wanted not in output:
            problems.append("missing from the output: %r" % wanted)
    if result is not None:
        with tarfile.open(tarball) as archive:
            plugins = sorted(name for name in archive.getnames()
                             if name.startswith(("plugins/modules/", "plugins/inventory/")) and name.endswith(".py")
                             and not name.endswith("__init__.py"))
        documented = {(item["content_type"], item["content_name"]) for item in result["docs_blob"]["contents"]
                      if item.get("doc_strings") and item["doc_strings"].get("doc")}
        for name in plugins:
            kind = "module" if name.startswith("plugins/modules/") else "inventory"
            if (kind, Path(name).stem) not in documented:
                problems.append("no documentation for %s %s in the import result" % (kind, Path(name).stem))
    if problems:
        sys.stderr.write("galaxy-importer found problems:\n%s\n" % "\n".join(problems))
        return 1
    print("galaxy-importer: %s imported with 0 warnings (%d plugins documented)" % (tarball.name, len(plugins)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
