"""`make bench`: the egress policy on a running sandbox.

Applying the agent preset (26 domains resolved inside the sandbox, 6 CIDRs) to an unrestricted
sandbox, and `allow` of one more domain, through the code the module runs (egress_apply.apply)
and through the `ansible` command (Ansible's own start-up included). Reference, in the same
run: a bare `true` exec round trip, and `ansible localhost -m ping` for Ansible's start-up. Targets: agent preset under 2 s, allow under 0.5 s.
Most of the preset's domains do not resolve on machines without internet: lookups run in
parallel with a 1 s timeout each, and the ones that did not resolve are printed.
"""

import json
import os
import secrets
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from conftest import COLLECTIONS_ROOT, ROOT  # noqa: E402  (makes ansible_collections.homelab.pixels importable)
from benchlib import IMAGE, SOCKET, arguments, create_project, drop_project, figure  # noqa: E402

import pylxd  # noqa: E402

from ansible_collections.homelab.pixels.plugins.module_utils.egress_apply import apply  # noqa: E402
from ansible_collections.homelab.pixels.plugins.module_utils.incus import IncusBackend  # noqa: E402

assert COLLECTIONS_ROOT in sys.path

RUN = secrets.token_hex(3)
PROJECT = f"pixels-bench-eg-{RUN}"
INSTANCE = f"px-eg-bench-{RUN}"
BIN = os.path.dirname(sys.executable)


def timed(call):
    start = time.perf_counter()
    result = call()
    return time.perf_counter() - start, result


def ansible_module(args, module="homelab.pixels.pixels_egress"):
    env = dict(os.environ, PIXELS_INCUS_PROJECT=PROJECT, PIXELS_INCUS_SOCKET=SOCKET,
               ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_LOCALHOST_WARNING="0",
               ANSIBLE_COLLECTIONS_PATH=COLLECTIONS_ROOT)
    cmd = [os.path.join(BIN, "ansible"), "localhost", "-m", module] + (["-a", json.dumps(args)] if args else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode:
        raise RuntimeError(proc.stdout + proc.stderr)


def line(label, values, target=None):
    text = figure(label, values, 44, 3)
    if target is not None:
        text += f"   (target < {target} s: {'met' if statistics.median(values) < target else 'MISSED'})"
    print(text)
    return target is None or statistics.median(values) < target


def main():
    args = arguments(__doc__, 5)

    admin = pylxd.Client(endpoint=SOCKET)
    create_project(admin, PROJECT)
    backend = IncusBackend(socket=SOCKET, project=PROJECT)
    timings = {key: [] for key in ("true", "ping", "agent", "allow", "agent-cli", "allow-cli")}
    base = {"host_layer": "none"}
    unresolved = []
    try:
        backend.create_sandbox(INSTANCE, IMAGE, cpu=1, memory=512)
        backend.wait_for_address(INSTANCE, 60)
        apply(backend, INSTANCE, dict(base, mode="unrestricted"), False)  # first install of the files
        for i in range(args.rounds):
            timings["true"].append(timed(lambda: backend.execute(INSTANCE, ["true"]))[0])
            timings["ping"].append(timed(lambda: ansible_module({}, module="ansible.builtin.ping"))[0])

            seconds, result = timed(lambda: apply(backend, INSTANCE, dict(base, mode="agent"), False))
            assert result["changed"] and result["policy"]["mode"] == "agent", result
            timings["agent"].append(seconds)
            unresolved = result["policy"]["unresolved"]
            seconds, result = timed(lambda: apply(backend, INSTANCE, dict(base, allow=[f"extra{i}.example.com"]), False))
            assert result["changed"], result
            timings["allow"].append(seconds)
            apply(backend, INSTANCE, dict(base, mode="unrestricted"), False)

            timings["agent-cli"].append(timed(lambda: ansible_module(dict(base, name=INSTANCE, mode="agent")))[0])
            timings["allow-cli"].append(timed(lambda: ansible_module(dict(base, name=INSTANCE, allow=[f"cli{i}.example.com"])))[0])
            apply(backend, INSTANCE, dict(base, mode="unrestricted"), False)
    finally:
        backend.delete(INSTANCE)
        drop_project(admin, PROJECT)

    print(f"Egress policy on a running sandbox, {args.rounds} rounds (in-sandbox layer)")
    met = line("reference: exec `true` round trip", timings["true"])
    met &= line("agent preset (module code)", timings["agent"], 2.0)
    met &= line("allow one domain (module code)", timings["allow"], 0.5)
    line("reference: `ansible localhost -m ping`", timings["ping"])
    line("agent preset (ansible command)", timings["agent-cli"])
    line("allow one domain (ansible command)", timings["allow-cli"])
    print(f"  agent preset: {len(unresolved)} of 26 domains did not resolve here: {', '.join(unresolved)}")
    return 0 if met or not args.strict else 1


if __name__ == "__main__":
    sys.exit(main())
