"""`make bench`: what btrfs quota accounting costs, full quota groups against simple quotas and none.

The incus_host role turns quota accounting on so that a checkpoint reports its size; the cost is
paid by the filesystem's own kernel threads (btrfs-cleaner removes deleted subvolumes later,
btrfs-transaction commits), after the command that caused it has returned. Per mode, a loop-backed
btrfs pool of its own (4 GiB; all in one project of the benchmark's own, no NIC): a source
container with some data (32 MiB and 5000 files of 4 KiB, as a base's tools) and a checkpoint, then
N sandboxes cloned from it; each writes M MiB, checkpoints and deletes the file again (so that only
the checkpoint holds it), then all are deleted.

Figures per mode, side by side (the modes alternate round by round): wall time of the clones and
of the deletes, CPU seconds of the pool's btrfs-cleaner + btrfs-transaction threads (during the
clones and checkpoints, during the deletes, after them until the cleaner is done), the whole
machine's busy CPU over the same time (others' load included), whether the quota groups are
left inconsistent (and what a rescan costs), and the checkpoint size Incus and
pixels_checkpoint_info report: with M MiB held only by the checkpoint, a real size is >= M MiB.

Targets: the role's default mode (simple) costs its pool's threads at most 1.5x the CPU of no
accounting, plus 1 s; pixels_checkpoint_info says null for a checkpoint's size with simple quotas
and without accounting, and at least M MiB with full quota groups. Exits 1 (unless --no-strict) when one
is missed. QUOTA_DEBUG=1 prints the cleaner's progress every second.
"""

import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from conftest import COLLECTIONS_ROOT  # noqa: E402  (makes ansible_collections.homelab.pixels importable)
from benchlib import IMAGE, SOCKET, arguments  # noqa: E402
from btrfs_quota import MODE_KEY, POOLS_DIR, btrfs, enable, mode_of, sysfs  # noqa: E402
import isolated  # noqa: E402

import pylxd  # noqa: E402

from ansible_collections.homelab.pixels.plugins.module_utils.incus import IncusBackend  # noqa: E402

assert COLLECTIONS_ROOT in sys.path

MODES = ("full", "simple", "none")
KTHREADS = ("btrfs-cleaner", "btrfs-transaction")
TICK = os.sysconf("SC_CLK_TCK")


def incus(*args, check=True):
    return isolated.incus(*args, check=check, timeout=600)


# -- the pool's kernel threads and the machine's CPU --------------------------

def kthreads():
    """{pid: name} of every btrfs-cleaner and btrfs-transaction thread on the machine."""
    found = {}
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/comm", encoding="ascii") as handle:
                    name = handle.read().strip()
            except OSError:
                continue
            if name in KTHREADS:
                found[int(pid)] = name
    return found


def thread_seconds(pids):
    """utime + stime of these threads, in seconds."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)
    return total / TICK


def machine_busy():
    """Busy CPU seconds of the whole machine (all but idle and iowait) since boot."""
    with open("/proc/stat", encoding="ascii") as handle:
        values = [int(v) for v in handle.readline().split()[1:8]]
    return (sum(values) - values[3] - values[4]) / TICK


class Pool:
    """A loop-backed btrfs pool of its own with one quota mode, and its two kernel threads."""

    def __init__(self, name, mode):
        self.name, self.mode = name, mode
        self.path = f"{POOLS_DIR}/{name}"
        self.threads = {}

    def create(self, size):
        before = kthreads()
        incus("storage", "create", self.name, "btrfs", f"size={size}", "--description", "homelab.pixels bench_quota")
        self.threads = {pid: name for pid, name in kthreads().items() if pid not in before}
        if sorted(self.threads.values()) != sorted(KTHREADS):
            # another btrfs filesystem was mounted at the same moment: not attributable
            raise RuntimeError(f"could not tell the kernel threads of pool {self.name} ({self.threads})")
        enable(self.path, self.mode)
        incus("storage", "set", self.name, f"{MODE_KEY}={self.mode}")  # as the incus_host role does
        if mode_of(self.path) != self.mode:
            raise RuntimeError(f"pool {self.name}: quota mode {mode_of(self.path)}, not {self.mode}")

    def sysfs(self, name):
        return sysfs(self.path, name)

    def cpu(self):
        return thread_seconds(self.threads)

    def deleted_subvolumes(self):
        """Subvolumes deleted but not yet cleaned up by btrfs-cleaner."""
        return len(btrfs("subvolume", "list", "-d", self.path).stdout.splitlines())


# -- one run of one mode -------------------------------------------------------

def rootfs(project, pool, instance):
    return f"{POOLS_DIR}/{pool.name}/containers/{project}_{instance}/rootfs"


def write_file(path, data):
    with open(path, "wb") as handle:
        handle.write(data)
        os.fsync(handle.fileno())


def prepare(client, project, pool, source_mb, source_files):
    """The source container (stopped) with some data of its own, checkpointed as `ready`: one file of
    ``source_mb`` MiB and ``source_files`` files of 4 KiB, as the tools of a base would be."""
    source = f"px-q-{pool.mode}"
    client.instances.create({"name": source, "source": {"type": "image", "alias": IMAGE},
                             "devices": {"root": {"type": "disk", "path": "/", "pool": pool.name}}}, wait=True)
    root = rootfs(project, pool, source)
    write_file(root + "/root/data", os.urandom(source_mb << 20))
    for index in range(source_files):
        directory = f"{root}/opt/tools/{index // 100}"
        os.makedirs(directory, exist_ok=True)
        with open(f"{directory}/{index % 100}", "wb") as handle:
            handle.write(os.urandom(4096))
    subprocess.run(["sync", "-f", root], check=True)
    client.instances.get(source).snapshots.create("ready", wait=True)


def run_mode(client, backend, project, pool, count, blob, settle):
    """One round: clone, write + checkpoint, delete, then wait for the cleaner. The figures."""
    names = [f"px-q-{pool.mode}-{i}" for i in range(count)]
    out = {}
    cpu0, busy0, start = pool.cpu(), machine_busy(), time.perf_counter()
    for name in names:
        client.instances.create({"name": name, "source": {"type": "copy", "source": f"px-q-{pool.mode}/ready"}}, wait=True)
    out["clone"] = time.perf_counter() - start
    for name in names:
        path = rootfs(project, pool, name) + "/root/blob"
        write_file(path, blob)
        client.instances.get(name).snapshots.create("cp", wait=True)
        os.unlink(path)
    btrfs("filesystem", "sync", pool.path)
    out["cpu_work"], mark = pool.cpu() - cpu0, pool.cpu()

    # What Incus says a checkpoint holds: only it keeps the blob now.
    api = client.api.instances[names[0]].snapshots["cp"].get().json()["metadata"]
    out["api_size"] = api.get("size")
    out["module_size"] = backend.list_checkpoints(names[0])[0].size
    out["inconsistent_before"] = pool.sysfs("inconsistent")

    start = time.perf_counter()
    for name in names:
        client.instances.get(name).delete(wait=True)
    out["delete"] = time.perf_counter() - start
    out["cpu_delete"], mark = pool.cpu() - mark, pool.cpu()

    # The deferred work: btrfs-cleaner drops the deleted subvolumes at a later transaction commit
    # (up to 30 s on an idle pool). Wait until none is left and the pool's threads have been idle 5 s.
    start = busy_until = time.perf_counter()
    previous, out["cleaned"] = pool.cpu(), None
    while time.perf_counter() - start < settle:
        time.sleep(1)
        now, left = pool.cpu(), pool.deleted_subvolumes()
        if os.environ.get("QUOTA_DEBUG"):
            print(f"    {time.perf_counter() - start:5.1f} s: threads {now:.2f} s, deleted subvolumes left {left}")
        if left == 0 and out["cleaned"] is None:
            out["cleaned"] = time.perf_counter() - start
        if now != previous:
            busy_until, previous = time.perf_counter(), now
        elif left == 0 and time.perf_counter() - busy_until >= 5:
            break
    out["busy"] = busy_until - start
    out["left"] = pool.deleted_subvolumes()
    out["cpu_after"] = pool.cpu() - mark
    out["cpu_total"] = pool.cpu() - cpu0
    out["machine"] = machine_busy() - busy0
    out["inconsistent"] = pool.sysfs("inconsistent")
    out["rescan"] = None
    if out["inconsistent"] == "1":
        start = time.perf_counter()
        btrfs("quota", "rescan", "-w", pool.path)
        out["rescan"] = time.perf_counter() - start
    return out


# -- setup and teardown ----------------------------------------------------------

def drop(project, pool_names):
    """Every instance of the project, the project and the pools; each step tried, problems printed."""
    problems = []
    if incus("project", "show", project, check=False).returncode == 0:
        for instance in json.loads(incus("list", "--project", project, "--format", "json").stdout):
            proc = incus("delete", "--force", "--project", project, instance["name"], check=False)
            if proc.returncode:
                problems.append(proc.stderr.strip())
        proc = incus("project", "delete", project, check=False)
        if proc.returncode:
            problems.append(proc.stderr.strip())
    for name in pool_names:
        if incus("storage", "show", name, check=False).returncode == 0:
            proc = incus("storage", "delete", name, check=False)
            if proc.returncode:
                problems.append(proc.stderr.strip())
    for problem in problems:
        print(f"could not delete: {problem}")


def size_text(value):
    if value is None:
        return "unknown"
    return f"{value / 1048576:.2f} MiB" if value >= 1048576 else f"{value} B"


def report(results, modes, megabytes):
    width = 14
    print("  " + " " * 34 + "".join(f"{mode:>{width}}" for mode in modes))

    def row(label, key, unit="s", digits=2):
        cells = []
        for mode in modes:
            values = [r[key] for r in results[mode] if r[key] is not None]
            cells.append(f"{statistics.median(values):{width - 2}.{digits}f} {unit}" if values else f"{'-':>{width}}")
        print(f"  {label:<34}" + "".join(cells))

    row("clone (wall)", "clone")
    row("delete (wall)", "delete")
    row("deleted subvolumes gone after", "cleaned", digits=0)
    row("pool threads busy after deletes", "busy", digits=0)
    row("pool threads CPU: clone+checkpoint", "cpu_work")
    row("pool threads CPU: deletes", "cpu_delete")
    row("pool threads CPU: after deletes", "cpu_after")
    row("pool threads CPU: total", "cpu_total")
    row("machine busy CPU (all processes)", "machine", digits=1)
    row("rescan when left inconsistent", "rescan")
    print(f"  {'subvolumes left to clean at the end':<34}" + "".join(
        f"{'/'.join(str(r['left']) for r in results[mode]):>{width}}" for mode in modes))
    print(f"  {'inconsistent after deletes':<34}" + "".join(
        f"{'/'.join('yes' if r['inconsistent'] == '1' else 'no' for r in results[mode]):>{width}}" for mode in modes))
    for label, key in (("checkpoint size: Incus API", "api_size"),
                       ("checkpoint size: checkpoint_info", "module_size")):
        print(f"  {label:<34}" + "".join(f"{size_text(results[mode][-1][key]):>{width}}" for mode in modes))
    print(f"  (the checkpoint alone holds {megabytes} MiB: a real size is >= {megabytes}.00 MiB)")


def main():
    args = arguments(__doc__, 1, extra=(("--sandboxes", int, 10), ("--megabytes", int, 8), ("--source-mb", int, 32),
                                        ("--source-files", int, 5000),
                                        ("--settle", int, 300), ("--size", str, "4GiB"),
                                        ("--modes", str, ",".join(MODES)), ("--prefix", str, "pixels-bench-quota")))
    modes = [mode for mode in args.modes.split(",") if mode]
    if not modes or any(mode not in MODES for mode in modes):
        raise SystemExit(f"--modes: a comma-separated list of {', '.join(MODES)}, not {args.modes!r}")
    project = args.prefix
    pools = {mode: Pool(f"{args.prefix}-{mode}", mode) for mode in modes}
    results = {mode: [] for mode in modes}
    blob = os.urandom(args.megabytes << 20)

    drop(project, [pool.name for pool in pools.values()])  # leftovers of an interrupted run
    try:
        incus("project", "create", project, "-c", "features.images=false", "-c", "features.profiles=true")
        client = pylxd.Client(endpoint=SOCKET, project=project)
        backend = IncusBackend(socket=SOCKET, project=project)
        for mode in modes:
            pools[mode].create(args.size)
            prepare(client, project, pools[mode], args.source_mb, args.source_files)
        for index in range(args.rounds):
            order = modes[index % len(modes):] + modes[:index % len(modes)]
            for mode in order:
                results[mode].append(run_mode(client, backend, project, pools[mode], args.sandboxes, blob, args.settle))
                print(f"  round {index + 1} {mode}: " + ", ".join(
                    f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in results[mode][-1].items()),
                    flush=True)
    finally:
        drop(project, [pool.name for pool in pools.values()])

    print(f"btrfs quota accounting: {args.sandboxes} sandboxes per round cloned from a checkpoint, each writes "
          f"{args.megabytes} MiB and checkpoints, then all deleted; median of {args.rounds} round(s); "
          f"kernel {os.uname().release}")
    report(results, modes, args.megabytes)
    ok = True
    if "none" in modes and "simple" in modes:
        none = statistics.median(r["cpu_total"] for r in results["none"])
        simple = statistics.median(r["cpu_total"] for r in results["simple"])
        met = simple <= 1.5 * none + 1
        ok = ok and met
        print(f"  simple quotas' pool threads: {simple:.2f} s against {none:.2f} s without accounting "
              f"(target <= 1.5x + 1 s: {'met' if met else 'MISSED'})")
    expected = {"full": lambda size: size is not None and size >= args.megabytes << 20,
                "simple": lambda size: size is None, "none": lambda size: size is None}
    met = all(expected[mode](r["module_size"]) for mode in modes for r in results[mode])
    ok = ok and met
    print(f"  checkpoint sizes as documented (full: >= {args.megabytes} MiB, simple and none: null): "
          f"{'met' if met else 'MISSED'}")
    return 0 if ok or not args.strict else 1


if __name__ == "__main__":
    sys.exit(main())
