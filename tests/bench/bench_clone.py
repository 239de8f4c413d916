"""`make bench`: a sandbox from a checkpoint until it has an IPv4 address and answers an exec.

Ours (the backend library the modules use) against raw pylxd doing copy + start + poll, in
the same run, on the same pool, alternating so that neither gets a warmer cache. Target: ours
at most 1.3x raw. Prints the figures; exits 1 (unless --no-strict) when a target is missed.
"""

import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from conftest import COLLECTIONS_ROOT  # noqa: E402  (makes ansible_collections.homelab.pixels importable)
from benchlib import IMAGE, SOCKET, arguments, create_project, delete_instances, drop_project, figure  # noqa: E402

import pylxd  # noqa: E402

from ansible_collections.homelab.pixels.plugins.module_utils.incus import IncusBackend  # noqa: E402

assert COLLECTIONS_ROOT in sys.path

PROJECT = "pixels-bench"
SOURCE = "px-bench-src"


def has_ipv4(state):
    for name, nic in (state.network or {}).items():
        if name != "lo" and any(a["family"] == "inet" and a["scope"] == "global" for a in nic["addresses"]):
            return True
    return False


def raw_clone(client, name):
    instance = client.instances.create(
        {"name": name, "source": {"type": "copy", "source": f"{SOURCE}/ready"}}, wait=True)
    instance.start(wait=True)
    while not has_ipv4(instance.state()):
        time.sleep(0.05)


def ours_clone(backend, name):
    backend.clone_sandbox(name, SOURCE, "ready")
    backend.wait_for_address(name, timeout=60)
    assert backend.run(name, ["true"]) == 0


def delete(*names):
    delete_instances(PROJECT, *names)


def main():
    args = arguments(__doc__, 5)

    admin = pylxd.Client(endpoint=SOCKET)
    create_project(admin, PROJECT)
    client = pylxd.Client(endpoint=SOCKET, project=PROJECT)
    backend = IncusBackend(socket=SOCKET, project=PROJECT)
    pool = admin.profiles.get("default").devices.get("root", {}).get("pool")
    driver = admin.storage_pools.get(pool).driver if pool else "?"
    timings = {"raw pylxd copy+start+poll": [], "ours clone+wait+exec": []}
    try:
        delete(SOURCE)
        backend.create_sandbox(SOURCE, IMAGE, cpu=1, memory=512)
        backend.wait_for_address(SOURCE, 60)
        backend.create_checkpoint(SOURCE, "ready")
        pair = (("raw pylxd copy+start+poll", lambda n: raw_clone(client, n)),
                ("ours clone+wait+exec", lambda n: ours_clone(backend, n)))
        for i in range(args.rounds):
            # raw first in even rounds, ours first in odd ones: neither always gets the warmer cache
            for label, clone in (pair if i % 2 == 0 else pair[::-1]):
                name = f"px-bench-{i}-{'raw' if label.startswith('raw') else 'ours'}"
                start = time.perf_counter()
                clone(name)
                timings[label].append(time.perf_counter() - start)
                delete(name)
    finally:
        for i in range(args.rounds):
            delete(f"px-bench-{i}-raw")
            delete(f"px-bench-{i}-ours")
        delete(SOURCE)
        drop_project(admin, PROJECT)

    print(f"Sandbox from a checkpoint until IPv4 (+ exec for ours); pool {pool} ({driver}), {args.rounds} rounds")
    for label, values in timings.items():
        print(figure(label, values, 28, 3))
    ratio = statistics.median(timings["ours clone+wait+exec"]) / statistics.median(timings["raw pylxd copy+start+poll"])
    ok = ratio <= 1.3
    print(f"  ours / raw = {ratio:.2f}  (target <= 1.30: {'met' if ok else 'MISSED'})")
    return 0 if ok or not args.strict else 1


if __name__ == "__main__":
    sys.exit(main())
