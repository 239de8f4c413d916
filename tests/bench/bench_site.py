"""`make bench`: sandboxes from a built base through the playbooks, end to end.

- one: `ansible-playbook homelab.pixels.create -e name=... -e base=...` (process start to exit),
  against the reference measured in the same run: the bare module call through
  `ansible localhost -m homelab.pixels.pixels_container -a 'name=... base=...'`, and the
  backend library alone (clone + start + address, no Ansible).
- ten: `ansible-playbook site.yml` with 10 sandboxes from the same base, in parallel, against
  the backend library cloning ten in threads (what Incus itself takes for ten at once).

Targets (issue #6): one under 3 s; ten under 2x one. Prints the figures; exits 1 (unless --no-strict)
when a target is missed. Provisioning and dev tools are off: this measures the site machinery.
"""

import concurrent.futures
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from conftest import COLLECTIONS_ROOT, ROOT  # noqa: E402  (makes ansible_collections.homelab.pixels importable)
from benchlib import IMAGE, SOCKET, arguments, create_project, delete_instances, drop_project, figure  # noqa: E402

import pylxd  # noqa: E402

from ansible_collections.homelab.pixels.plugins.module_utils.bases import newest_checkpoint  # noqa: E402
from ansible_collections.homelab.pixels.plugins.module_utils.incus import IncusBackend  # noqa: E402

assert COLLECTIONS_ROOT in sys.path

PROJECT = f"pixels-bench-site-{os.getpid()}"
BASE = "bs-bench"
BIN = os.path.dirname(sys.executable)
OFF = {"provision": False, "devtools": False}


def env():
    result = dict(os.environ, PIXELS_INCUS_SOCKET=SOCKET, PIXELS_INCUS_PROJECT=PROJECT,
                  ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_COLLECTIONS_PATH=COLLECTIONS_ROOT,
                  PIXELS_DEFAULT_CPU="1", PIXELS_DEFAULT_MEMORY="512")
    result.pop("PIXELS_CONFIG", None)
    return result


def run(cmd):
    """Seconds from process start to exit; fails loudly when the command fails."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env(), cwd=ROOT, stdin=subprocess.DEVNULL, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return elapsed


def delete(*names):
    delete_instances(PROJECT, *["px-" + name for name in names])


def library_clone(name):
    """The backend library alone: newest checkpoint of the base, clone, start, address."""
    backend = IncusBackend(socket=SOCKET, project=PROJECT)
    source, label = newest_checkpoint(backend, BASE)
    backend.clone_sandbox("px-" + name, source, label)
    backend.wait_for_address("px-" + name, 120)
    backend.close()


def vars_file(directory, sandboxes):
    path = os.path.join(directory, f"site-{len(sandboxes)}.yml")
    with open(path, "w") as handle:
        json.dump({"pixels_bases": [{"name": BASE, "image": IMAGE}], "pixels_sandboxes": sandboxes}, handle)
    return path


def main():
    args = arguments(__doc__, 3)

    admin = pylxd.Client(endpoint=SOCKET)
    create_project(admin, PROJECT)
    timings = {"create playbook, one": [], "ref: ansible -m pixels_container, one": [],
               "ref: backend clone+address, one": [], "site.yml, ten in parallel": [],
               "ref: backend, ten in threads": []}
    ten = [dict(name=f"bs-bench-t{i}", base=BASE, **OFF) for i in range(10)]
    try:
        with tempfile.TemporaryDirectory() as directory:
            base_vars = vars_file(directory, [])
            build = run([os.path.join(BIN, "ansible-playbook"), "homelab.pixels.base_build", "-e", f"name={BASE}",
                         "-e", "@" + base_vars])
            ten_vars = vars_file(directory, ten)
            for _round in range(args.rounds):
                timings["create playbook, one"].append(run(
                    [os.path.join(BIN, "ansible-playbook"), "homelab.pixels.create", "-e", "name=bs-bench-one",
                     "-e", f"base={BASE}", "-e", "provision=false", "-e", "devtools=false"]))
                delete("bs-bench-one")
                timings["ref: ansible -m pixels_container, one"].append(run(
                    [os.path.join(BIN, "ansible"), "localhost", "-m", "homelab.pixels.pixels_container",
                     "-a", json.dumps({"name": "bs-bench-ref", "base": BASE})]))
                delete("bs-bench-ref")
                start = time.perf_counter()
                library_clone("bs-bench-lib")
                timings["ref: backend clone+address, one"].append(time.perf_counter() - start)
                delete("bs-bench-lib")
                start = time.perf_counter()
                with concurrent.futures.ThreadPoolExecutor(10) as pool:
                    list(pool.map(library_clone, [f"bs-bench-lib{i}" for i in range(10)]))
                timings["ref: backend, ten in threads"].append(time.perf_counter() - start)
                delete(*[f"bs-bench-lib{i}" for i in range(10)])
                timings["site.yml, ten in parallel"].append(run(
                    [os.path.join(BIN, "ansible-playbook"), os.path.join(ROOT, "site.yml"), "-e", "@" + ten_vars]))
                delete(*[box["name"] for box in ten])
    finally:
        delete("bs-bench-one", "bs-bench-ref", "bs-bench-lib", *[box["name"] for box in ten],
               *[f"bs-bench-lib{i}" for i in range(10)], "base-" + BASE)
        drop_project(admin, PROJECT)

    load = os.getloadavg()[0]
    print(f"Sandboxes from a built base (base build {build:.1f} s once), {args.rounds} rounds, "
          f"{os.cpu_count()} CPUs, load {load:.1f}")
    for label, values in timings.items():
        print(figure(label, values, 40, 2))
    one = statistics.median(timings["create playbook, one"])
    ten_time = statistics.median(timings["site.yml, ten in parallel"])
    ok_one = one < 3.0
    ok_ten = ten_time < 2 * one
    print(f"  one via create: {one:.2f} s (target < 3 s: {'met' if ok_one else 'MISSED'})")
    print(f"  ten / one = {ten_time / one:.2f}  (target < 2.00: {'met' if ok_ten else 'MISSED'})")
    return 0 if (ok_one and ok_ten) or not args.strict else 1


if __name__ == "__main__":
    sys.exit(main())
