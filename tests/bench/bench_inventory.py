"""`make bench`: `ansible-inventory --list` of 100 sandboxes.

Ours (homelab.pixels.sandboxes) against community.general.lxd pointed at the same Incus
socket and project, and against an empty inventory, in the same run, alternating so that
none gets a warmer cache. All three run with the same ansible-core and Python (this
checkout's .venv); community.general comes from the `ansible` package installed into a
virtualenv of the benchmark's own (~/.cache/pixels/bench-venv), never into .venv.

Targets (issue 3): ours at least 3x faster than community.general.lxd, and at most 0.3 s
above the empty inventory, with every sandbox stopped and again with one running. Prints the figures; exits 1 (unless --no-strict) when a target is missed.
The sandboxes are stopped clones in an Incus project of their own, deleted at the end.
"""

import glob
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from conftest import COLLECTIONS_ROOT, ROOT  # noqa: E402  (makes ansible_collections.homelab.pixels importable)
from benchlib import IMAGE, SOCKET, arguments, create_project, drop_project, figure  # noqa: E402

PROJECT = "pixels-bench-inv"
SOURCE = "px-binv-src"
BIN = os.path.dirname(sys.executable)
BENCH_VENV = os.path.expanduser(os.environ.get("PIXELS_BENCH_VENV", "~/.cache/pixels/bench-venv"))
ANSIBLE_PACKAGE = os.environ.get("PIXELS_BENCH_ANSIBLE", "ansible>=12,<13")  # the one for ansible-core 2.19


def incus(*args, check=True):
    proc = subprocess.run(["incus", "--project", PROJECT, *args], capture_output=True, text=True, check=False)
    if check and proc.returncode:
        raise RuntimeError(f"incus {' '.join(args)}: {proc.stderr.strip()}")
    return proc


def project_instances():
    out = incus("list", "--format", "csv", "--columns", "n", check=False).stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


def delete_all():
    names = project_instances()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda n: incus("delete", "--force", n, check=False), names))


def setup(count):
    create_project(None, PROJECT)
    delete_all()  # leftovers of an interrupted run
    incus("init", IMAGE, SOURCE, "-c", "limits.cpu=1", "-c", "limits.memory=512MiB",
          "-c", f"user.pixels.image={IMAGE}")
    names = [f"px-binv-{i:03d}" for i in range(count)]
    start = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda n: incus("copy", SOURCE, n, "--instance-only"), names))
    for name in names[: count // 4]:  # some metadata for the groups
        incus("config", "set", name, "user.pixels.base=binv-src", "user.pixels.egress=agent")
    return time.perf_counter() - start


def teardown():
    delete_all()
    drop_project(None, PROJECT)


def bench_collections():
    """community.general from the `ansible` package, in the benchmark's own virtualenv."""
    pattern = os.path.join(BENCH_VENV, "lib", "python*", "site-packages", "ansible_collections")
    found = [p for p in glob.glob(pattern) if os.path.isdir(os.path.join(p, "community", "general"))]
    if not found:
        if not os.path.exists(os.path.join(BENCH_VENV, "bin", "python")):
            subprocess.run([sys.executable, "-m", "venv", BENCH_VENV], check=True)
        print(f"Installing {ANSIBLE_PACKAGE} (community.general) into {BENCH_VENV} ...", flush=True)
        subprocess.run([os.path.join(BENCH_VENV, "bin", "pip"), "install", "-q", ANSIBLE_PACKAGE], check=True)
        found = [p for p in glob.glob(pattern) if os.path.isdir(os.path.join(p, "community", "general"))]
    path = found[0]
    with open(os.path.join(path, "community", "general", "MANIFEST.json")) as handle:
        version = json.load(handle)["collection_info"]["version"]
    return os.path.dirname(path), version


class CountingProxy:
    """A unix socket in front of Incus that counts the HTTP requests passing through."""

    def __init__(self, path):
        self.path = path
        self.requests = 0
        self._lock = threading.Lock()
        self._server = socket.socket(socket.AF_UNIX)
        self._server.bind(path)
        self._server.listen(64)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client = self._server.accept()[0]
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX)
            upstream.connect(SOCKET)
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src, dst, count):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if count:
                    with self._lock:
                        self.requests += data.count(b" HTTP/1.1\r\n")
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self._server.close()
        os.unlink(self.path)


def sources(directory, socket_path=SOCKET):
    ours = os.path.join(directory, "bench.pixels.yml")
    with open(ours, "w") as handle:
        handle.write(f"plugin: homelab.pixels.sandboxes\nsocket: {socket_path}\nproject: {PROJECT}\n")
    theirs = os.path.join(directory, "bench.lxd.yml")
    with open(theirs, "w") as handle:
        handle.write(f"plugin: community.general.lxd\nurl: unix:{socket_path}\nproject: {PROJECT}\n")
    empty = os.path.join(directory, "empty.ini")
    open(empty, "w").close()
    return {"empty inventory": empty, "homelab.pixels.sandboxes": ours, "community.general.lxd": theirs}


def run(source, env):
    start = time.perf_counter()
    proc = subprocess.run([os.path.join(BIN, "ansible-inventory"), "-i", source, "--list"],
                          capture_output=True, text=True, env=env, cwd=ROOT, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode:
        raise RuntimeError(f"ansible-inventory -i {source} failed: {proc.stderr}")
    return elapsed, proc.stdout


def raw_api_timings():
    """What the requests cost Incus itself, and whether it can leave the state out."""
    def get(url):
        start = time.perf_counter()
        proc = subprocess.run(["curl", "-s", "--unix-socket", SOCKET, f"http://incus{url}"],
                              capture_output=True, text=True, check=False)
        return time.perf_counter() - start, json.loads(proc.stdout or "{}")

    figures = {}
    for label, url in (("recursion=1", f"/1.0/instances?recursion=1&project={PROJECT}"),
                       ("recursion=2", f"/1.0/instances?recursion=2&project={PROJECT}"),
                       ("pool volumes", f"/1.0/storage-pools/{pool_of(SOURCE)}/volumes?recursion=1&project={PROJECT}")):
        figures[label] = statistics.median([get(url)[0], get(url)[0], get(url)[0], get(url)[0], get(url)[0]])
    answer = get(f"/1.0/instances?recursion=2;fields=state.network&project={PROJECT}")[1]
    fields = f"unsupported ({answer['error']})" if answer.get("error") else "accepted"
    return figures, fields


def pool_of(instance):
    proc = subprocess.run(["curl", "-s", "--unix-socket", SOCKET,
                           f"http://incus/1.0/instances/{instance}?project={PROJECT}"],
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)["metadata"]["expanded_devices"]["root"]["pool"]


def wait_until_booted(instance, timeout=120):
    """Until it has an IPv4 address and its boot has settled (not to time its boot)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = incus("list", f"^{instance}$", "--format", "csv", "--columns", "4", check=False).stdout
        if out.strip():
            subprocess.run(["incus", "--project", PROJECT, "exec", instance, "--", "systemctl", "is-system-running",
                            "--wait"], capture_output=True, timeout=timeout, check=False)
            return
        time.sleep(0.2)
    raise RuntimeError(f"{instance} got no IPv4 address within {timeout} s")


def measure(plain, env, rounds, labels):
    timings = {label: [] for label in labels}
    for label in labels:  # warm-up
        run(plain[label], env)
    for _round in range(rounds):
        for label in labels:
            timings[label].append(run(plain[label], env)[0])
    return timings


def count_requests(workdir, env, labels, count):
    """One run of each through a counting proxy: the hosts found and the requests made."""
    proxy = CountingProxy(os.path.join(workdir, "counting.socket"))
    requests = {}
    try:
        counted = sources(os.path.join(workdir, "counted"), proxy.path)
        for label in labels:
            before = proxy.requests
            out = run(counted[label], env)[1]
            time.sleep(0.1)
            hostvars = json.loads(out)["_meta"]["hostvars"]
            found = [h for h in hostvars if "binv-" in h and "src" not in h]
            if len(found) != count:
                raise RuntimeError(f"{label} listed {len(found)} of {count} sandboxes")
            requests[label] = proxy.requests - before
    finally:
        proxy.close()
    return requests


def main():
    args = arguments(__doc__, 10, extra=(("--count", int, 100),))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # still delete the sandboxes

    collections, cg_version = bench_collections()
    env = dict(os.environ)
    for key in [k for k in env if k.startswith(("PIXELS_", "ANSIBLE_"))]:
        del env[key]
    env.update({
        "ANSIBLE_CONFIG": os.path.join(ROOT, "ansible.cfg"),
        "ANSIBLE_COLLECTIONS_PATH": os.pathsep.join([COLLECTIONS_ROOT, collections]),
        "ANSIBLE_INVENTORY_UNPARSED_FAILED": "1",
        "ANSIBLE_DEPRECATION_WARNINGS": "0",
    })
    workdir = tempfile.mkdtemp(prefix="pixels-bench-inv-")
    os.makedirs(os.path.join(workdir, "counted"))
    labels = ("empty inventory", "homelab.pixels.sandboxes", "community.general.lxd")
    try:
        made = setup(args.count)
        print(f"{args.count} stopped sandboxes cloned in {made:.1f} s (project {PROJECT})", flush=True)
        api, fields = raw_api_timings()
        requests = count_requests(workdir, env, labels[1:], args.count)
        plain = sources(workdir)
        timings = measure(plain, env, args.rounds, labels)
        # The same with one sandbox running: Incus then computes every sandbox's state.
        incus("start", "px-binv-000")
        wait_until_booted("px-binv-000")
        running_requests = count_requests(workdir, env, labels[1:], args.count)
        running = measure(plain, env, max(3, args.rounds // 2), labels)
    finally:
        teardown()
        shutil.rmtree(workdir, ignore_errors=True)

    def table(title, figures, counts):
        print(title)
        for label, values in figures.items():
            extra = f"   {counts[label]:4d} API requests" if label in counts else ""
            print(figure(label, values, 26, 3, extra))
        ours = statistics.median(figures["homelab.pixels.sandboxes"])
        return (statistics.median(figures["community.general.lxd"]) / ours,
                ours - statistics.median(figures["empty inventory"]))

    speedup, overhead = table(
        f"ansible-inventory --list, {args.count} stopped sandboxes, {args.rounds} rounds "
        f"(community.general {cg_version}; same ansible-core and Python for all)", timings, requests)
    fast, light = speedup >= 3, overhead <= 0.3
    print(f"  community.general.lxd / ours = {speedup:.2f}x  (target >= 3x: {'met' if fast else 'MISSED'})")
    print(f"  ours - empty = {overhead:.3f} s  (target <= 0.300 s: {'met' if light else 'MISSED'})")
    running_speedup, running_overhead = table(
        f"The same with 1 of the {args.count} running (the full listing: Incus computes every "
        f"sandbox's state), {max(3, args.rounds // 2)} rounds", running, running_requests)
    running_ok = running_speedup >= 3 and running_overhead <= 0.3
    print(f"  community.general.lxd / ours = {running_speedup:.2f}x, ours - empty = {running_overhead:.3f} s "
          f"(the same targets: {'met' if running_ok else 'MISSED'})")
    print(f"  Incus alone (curl, all stopped, median of 5): GET /1.0/instances?recursion=1 "
          f"{api['recursion=1'] * 1000:.0f} ms, ?recursion=2 {api['recursion=2'] * 1000:.0f} ms, "
          f"pool volume list {api['pool volumes'] * 1000:.0f} ms; recursion=2;fields=state.network: {fields}")
    return 0 if (fast and light and running_ok) or not args.strict else 1


if __name__ == "__main__":
    sys.exit(main())
