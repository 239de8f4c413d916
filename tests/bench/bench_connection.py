"""`make bench`: a play that loops `command: true` 20 times in one sandbox, per connection plugin.

Ours (homelab.pixels.incus, with its defaults) against community.general.incus (the `incus`
CLI; from the `ansible` package, installed only into this benchmark's own virtualenv,
~/.cache/pixels/bench-venv) and against ssh with pipelining and a ControlPersist master, in
the same run, alternating rounds so that none gets a warmer cache. All three run with the same
ansible-playbook (this checkout's .venv). Targets: ours at most 0.55x community.general.incus,
and no slower than ssh with pipelining. Also prints, for information, 20 separate tasks (ours
and ssh). Prints the figures; exits 1 (unless --no-strict) when a target is missed.
"""

import glob
import os
import shutil
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

from ansible_collections.homelab.pixels.plugins.module_utils.incus import IncusBackend  # noqa: E402

# Per run: two runs at once must not share a project, nor an instance name (a DNS name on the bridge).
RUN = f"{os.getpid():x}"
PROJECT = f"pixels-bench-conn-{RUN}"
INSTANCE = f"px-bench-conn-{RUN}"
BIN = os.path.dirname(sys.executable)
BENCH_VENV = os.path.expanduser(os.environ.get("PIXELS_BENCH_VENV", "~/.cache/pixels/bench-venv"))

PLAY = """\
- hosts: bench
  gather_facts: false
  tasks:
    - ansible.builtin.command: "true"
      loop: "{{ range(20) | list }}"
"""
# For information: 20 tasks rather than one task with 20 items, so that each gets a new
# worker process and connection (what most playbooks do).
TASKS_PLAY = """\
- hosts: bench
  gather_facts: false
  tasks:
""" + '    - ansible.builtin.command: "true"\n' * 20
TASKS_LABELS = ("ours", "ssh, pipelining")


def bench_collections():
    """The ansible_collections directory of the `ansible` package in the benchmark's own venv."""
    from ansible.release import __version__  # pylint: disable=import-outside-toplevel
    major, minor = (int(part) for part in __version__.split(".")[:2])
    # ansible N ships with ansible-core 2.(N+7): the same core as ours, so only the plugins differ.
    wanted = f"ansible>={minor - 7},<{minor - 6}" if major == 2 else "ansible"
    found = glob.glob(os.path.join(BENCH_VENV, "lib", "python3*", "site-packages", "ansible_collections"))
    if not (found and os.path.isdir(os.path.join(found[0], "community", "general"))):
        print(f"Installing {wanted} into {BENCH_VENV} (only for this benchmark) ...", flush=True)
        if not os.path.exists(os.path.join(BENCH_VENV, "bin", "pip")):
            subprocess.run([sys.executable, "-m", "venv", BENCH_VENV], check=True)
        subprocess.run([os.path.join(BENCH_VENV, "bin", "pip"), "install", "-q", wanted], check=True)
        found = glob.glob(os.path.join(BENCH_VENV, "lib", "python3*", "site-packages", "ansible_collections"))
    return found[0]


def delete(*names):
    delete_instances(PROJECT, *names)


def setup_ssh(backend, workdir):
    """A key for root in the sandbox and sshd running; the key's path."""
    key = os.path.join(workdir, "id_ed25519")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True)
    result = backend.execute(INSTANCE, ["/bin/sh", "-c", "install -d -m 700 /root/.ssh && systemctl start ssh"])
    assert result.rc == 0, result
    backend.put_file(INSTANCE, key + ".pub", "/root/.ssh/authorized_keys", mode=0o600)
    return key


def inventories(workdir, address, key):
    ssh_args = "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"
    common = "ansible_python_interpreter=/usr/bin/python3"
    lines = {
        "ours": f"bench ansible_connection=homelab.pixels.incus pixels_instance={INSTANCE} pixels_incus_project={PROJECT}",
        "ours, pipelining off": f"bench ansible_connection=homelab.pixels.incus pixels_instance={INSTANCE} "
                                f"pixels_incus_project={PROJECT} ansible_pipelining=false",
        "community.general.incus": f"bench ansible_connection=community.general.incus ansible_incus_host={INSTANCE} "
                                   f"ansible_incus_project={PROJECT}",
        "community.general.incus, pipelining": f"bench ansible_connection=community.general.incus "
                                               f"ansible_incus_host={INSTANCE} ansible_incus_project={PROJECT} "
                                               f"ansible_pipelining=true",
        "ssh, pipelining": f"bench ansible_connection=ssh ansible_host={address} ansible_user=root "
                           f"ansible_ssh_private_key_file={key} ansible_ssh_common_args='{ssh_args}' "
                           f"ansible_pipelining=true",
    }
    paths = {}
    for index, (label, line) in enumerate(lines.items()):
        paths[label] = os.path.join(workdir, f"inventory-{index}.ini")
        with open(paths[label], "w", encoding="utf-8") as handle:
            handle.write(f"{line} {common}\n")
    return paths


def run_play(inventory, playbook, env):
    start = time.perf_counter()
    proc = subprocess.run([os.path.join(BIN, "ansible-playbook"), "-i", inventory, playbook],
                          capture_output=True, text=True, env=env, cwd=ROOT, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"ansible-playbook -i {inventory} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return elapsed


def main():
    args = arguments(__doc__, 3)

    collections = bench_collections()
    admin = pylxd.Client(endpoint=SOCKET)
    create_project(admin, PROJECT)
    backend = IncusBackend(socket=SOCKET, project=PROJECT)
    workdir = tempfile.mkdtemp(prefix="pixels-bench-conn-")
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"),
               ANSIBLE_COLLECTIONS_PATH=os.pathsep.join([COLLECTIONS_ROOT, os.path.dirname(collections)]),
               ANSIBLE_HOST_KEY_CHECKING="false", ANSIBLE_NOCOLOR="1",
               ANSIBLE_SSH_CONTROL_PATH_DIR=os.path.join(workdir, "cp"))
    for key in ("ANSIBLE_PIPELINING", "PIXELS_INCUS_REMOTE", "PIXELS_INCUS_PROJECT", "PIXELS_INCUS_SOCKET", "PIXELS_CONFIG"):
        env.pop(key, None)
    timings, tasks_timings = {}, {}
    try:
        delete(INSTANCE)
        backend.create_sandbox(INSTANCE, IMAGE)
        address = backend.wait_for_address(INSTANCE, 60).ipv4[0]
        key = setup_ssh(backend, workdir)
        paths = inventories(workdir, address, key)
        playbook, tasks_playbook = os.path.join(workdir, "loop.yml"), os.path.join(workdir, "tasks.yml")
        for path, text in ((playbook, PLAY), (tasks_playbook, TASKS_PLAY)):
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(text)
        timings = {label: [] for label in paths}
        tasks_timings = {label: [] for label in TASKS_LABELS}
        for label, inventory in paths.items():  # warm-up: caches, the ssh master, sshd's first login
            run_play(inventory, playbook, env)
        for _round in range(args.rounds):
            for label, inventory in paths.items():
                timings[label].append(run_play(inventory, playbook, env))
            for label in TASKS_LABELS:
                tasks_timings[label].append(run_play(paths[label], tasks_playbook, env))
    finally:
        delete(INSTANCE)
        backend.close()
        shutil.rmtree(workdir, ignore_errors=True)
        drop_project(admin, PROJECT)

    median = {label: statistics.median(values) for label, values in timings.items()}
    print(f"`command: true` x20 in one sandbox ({IMAGE}), ansible-playbook wall time, {args.rounds} rounds after a warm-up")
    for label, values in timings.items():
        print(figure(label, values, 38, 2))
    ours = median["ours"]
    against_cg = ours / median["community.general.incus"]
    against_ssh = ours / median["ssh, pipelining"]
    ok_cg, ok_ssh = against_cg <= 0.55, against_ssh <= 1.0
    print(f"  ours / community.general.incus = {against_cg:.2f}  (target <= 0.55: {'met' if ok_cg else 'MISSED'})")
    print(f"  ours / ssh with pipelining      = {against_ssh:.2f}  (target <= 1.00: {'met' if ok_ssh else 'MISSED'})")
    print(f"  (ours / community.general.incus with pipelining = "
          f"{ours / median['community.general.incus, pipelining']:.2f}, for reference)")
    print("20 separate `command: true` tasks (a worker process and a connection each), for information:")
    for label, values in tasks_timings.items():
        print(figure(label, values, 38, 2))
    return 0 if (ok_cg and ok_ssh) or not args.strict else 1


if __name__ == "__main__":
    sys.exit(main())
