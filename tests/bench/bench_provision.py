"""`make bench`: how long until a sandbox is "provisioned" (homelab.pixels.provision, no dev tools).

1. Empty image: create a sandbox, wait for its address, run the provision role.
2. Clone of a provisioned checkpoint: clone, wait for the address, run the role again. The role's
   quick check (one command in the sandbox) should end it: target < 3 s for the role's run.
References measured in the same run, on the same clone: the floor of any playbook over the
homelab.pixels.incus connection (one `raw: true` task), and the role with every step forced
(what the re-run would cost without the quick check). Exits 1 (unless --no-strict) when the target is missed.
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.dirname(HERE))
from conftest import COLLECTIONS_ROOT  # noqa: E402  (makes ansible_collections.homelab.pixels importable)
from benchlib import IMAGE, SOCKET, arguments, create_project, delete_instances, drop_project, figure  # noqa: E402

import pylxd  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

from ansible_collections.homelab.pixels.plugins.module_utils.incus import IncusBackend  # noqa: E402

PROJECT = "pixels-bench-pv"
SOURCE = "px-pv-bench-src"
BIN = os.path.dirname(sys.executable)

ROLE = """
- hosts: sandboxes
  gather_facts: false
  roles:
    - role: homelab.pixels.provision
"""
FLOOR = """
- hosts: sandboxes
  gather_facts: false
  tasks:
    - ansible.builtin.raw: "true"
"""


def delete(*names):
    delete_instances(PROJECT, *names)


class Runner:
    def __init__(self, workdir, gateway):
        self.workdir = workdir
        key = Ed25519PrivateKey.generate().public_key()
        self.vars = {
            "pixels_ssh_keys": [key.public_bytes(serialization.Encoding.OpenSSH,
                                                 serialization.PublicFormat.OpenSSH).decode()],
            "pixels_dns": [gateway],
            "pixels_env": {"EDITOR": "vim", "TOKEN": {"forward": True}},
            "pixels_ca_certificates": ["/etc/ssl/certs/ca-certificates.crt"],
        }
        self.env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"),
                        ANSIBLE_COLLECTIONS_PATH=COLLECTIONS_ROOT, PATH=BIN + os.pathsep + os.environ["PATH"])
        for name, text in (("role.yml", ROLE), ("floor.yml", FLOOR)):
            with open(os.path.join(workdir, name), "w") as handle:
                handle.write(text)

    def play(self, playbook, instance, **extra):
        inventory = os.path.join(self.workdir, "inventory.ini")
        with open(inventory, "w") as handle:
            handle.write(f"[sandboxes]\n{instance[3:]} ansible_connection=homelab.pixels.incus pixels_instance={instance}"
                         f" pixels_incus_project={PROJECT} pixels_incus_socket={SOCKET}"
                         " ansible_python_interpreter=/usr/bin/python3\n")
        start = time.perf_counter()
        proc = subprocess.run([os.path.join(BIN, "ansible-playbook"), "-i", inventory,
                               os.path.join(self.workdir, playbook), "-e", json.dumps(dict(self.vars, **extra))],
                              capture_output=True, text=True, env=self.env, cwd=ROOT, check=False)
        elapsed = time.perf_counter() - start
        if proc.returncode:
            raise SystemExit(f"{playbook} failed on {instance}:\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")
        return elapsed, proc.stdout

    def quick(self, instance):
        """The role on a provisioned sandbox; its time, and whether the quick check ended it."""
        elapsed, stdout = self.play("role.yml", instance)
        tail = stdout.split("TASK [homelab.pixels.provision : Provision]", 1)[-1]
        return elapsed, tail.lstrip("* \n").startswith("skipping")


def main():
    args = arguments(__doc__, 3)

    admin = pylxd.Client(endpoint=SOCKET)
    gateway = create_project(admin, PROJECT)
    backend = IncusBackend(socket=SOCKET, project=PROJECT)
    figures = {key: [] for key in ("empty: create + address", "empty: provision role",
                                   "clone: clone + address", "clone: provision role (quick check)",
                                   "reference: one raw task", "reference: role, every step forced")}
    names = []
    quick_runs = 0
    try:
        with tempfile.TemporaryDirectory() as workdir:
            runner = Runner(workdir, gateway)
            for i in range(args.rounds):
                name = f"px-pv-bench-empty{i}"
                names.append(name)
                start = time.perf_counter()
                backend.create_sandbox(name, IMAGE, cpu=1, memory=1024)
                backend.wait_for_address(name, 60)
                figures["empty: create + address"].append(time.perf_counter() - start)
                figures["empty: provision role"].append(runner.play("role.yml", name)[0])
                if i == 0:  # the provisioned checkpoint the clones come from
                    delete(SOURCE)
                    backend.clone_sandbox(SOURCE, name)
                    backend.wait_for_address(SOURCE, 60)
                    backend.create_checkpoint(SOURCE, "provisioned")
                delete(name)
            for i in range(args.rounds):
                name = f"px-pv-bench-clone{i}"
                names.append(name)
                start = time.perf_counter()
                backend.clone_sandbox(name, SOURCE, "provisioned")
                backend.wait_for_address(name, 60)
                figures["clone: clone + address"].append(time.perf_counter() - start)
                elapsed, was_quick = runner.quick(name)
                figures["clone: provision role (quick check)"].append(elapsed)
                quick_runs += was_quick
                figures["reference: one raw task"].append(runner.play("floor.yml", name)[0])
                figures["reference: role, every step forced"].append(
                    runner.play("role.yml", name, pixels_provision_force=True)[0])
                delete(name)
    finally:
        for name in names + [SOURCE]:
            delete(name)
        drop_project(admin, PROJECT)

    print(f"Sandbox to 'provisioned' (provision role, no dev tools), image {IMAGE}, {args.rounds} rounds")
    for label, values in figures.items():
        print(figure(label, values, 40, 2))
    empty = statistics.median(figures["empty: create + address"]) + statistics.median(figures["empty: provision role"])
    clone = statistics.median(figures["clone: clone + address"]) + \
        statistics.median(figures["clone: provision role (quick check)"])
    quick = statistics.median(figures["clone: provision role (quick check)"])
    ok = quick < 3.0 and quick_runs == args.rounds
    print(f"  empty image -> provisioned: {empty:.2f} s;  provisioned checkpoint clone -> provisioned: {clone:.2f} s")
    print(f"  quick check ended the role on {quick_runs} of {args.rounds} clones")
    print(f"  role on the clone {quick:.2f} s  (target < 3 s: {'met' if ok else 'MISSED'})")
    return 0 if ok or not args.strict else 1


if __name__ == "__main__":
    sys.exit(main())
