"""btrfs quota modes of a pool, for the benchmark and the tests that make pools of their own."""

import fcntl
import os
import struct
import subprocess

POOLS_DIR = "/var/lib/incus/storage-pools"
MODE_KEY = "user.pixels.btrfs_quota"  # where the incus_host role records a pool's mode
# BTRFS_IOC_QUOTA_CTL = _IOWR(0x94, 40, struct btrfs_ioctl_quota_ctl_args {u64 cmd; u64 status;})
QUOTA_CTL = 0xC0109428
QUOTA_CTL_ENABLE_SIMPLE = 4


def btrfs(*args, check=True):
    proc = subprocess.run(["btrfs", *args], capture_output=True, text=True, timeout=600, check=False)
    if check and proc.returncode:
        raise RuntimeError(f"btrfs {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc


def loop_pools_unavailable(loop_devices=True):
    """Why no loop-backed btrfs pool can be made here, as the incus_host role decides (the kernel
    lacks btrfs, a user namespace, no free loop device: not asked with ``loop_devices`` False);
    None when one can."""
    with open("/proc/filesystems") as handle:
        known = any(line.split()[-1] == "btrfs" for line in handle if line.strip())
    modules = subprocess.run(["sh", "-c", "find /lib/modules/$(uname -r) -name 'btrfs.ko*' 2>/dev/null | grep -q ."],
                             check=False).returncode == 0
    if not known and not modules:
        return "the kernel has no btrfs"
    with open("/proc/self/uid_map") as handle:
        if handle.readline().split() != ["0", "0", "4294967295"]:
            return "this host runs in a user namespace (an unprivileged container), where no loop file can be mounted"
    if loop_devices and subprocess.run(["losetup", "-f"], capture_output=True, check=False).returncode:
        return "there is no free loop device"
    return None


def kernel_has_simple_quotas():
    return os.path.exists("/sys/fs/btrfs/features/simple_quota")


def progs_have_simple_quotas():
    return "--simple" in btrfs("quota", "enable", "--help", check=False).stdout


def enable(path, mode):
    """Turn on ``full`` quota groups (with the rescan the role does) or ``simple`` quotas;
    ``none`` leaves them off. Simple quotas through btrfs-progs >= 6.7, else the same ioctl."""
    if mode == "full":
        btrfs("quota", "enable", path)
        btrfs("quota", "rescan", "-w", path)
    elif mode == "simple":
        if progs_have_simple_quotas():
            btrfs("quota", "enable", "--simple", path)
            return
        fd = os.open(path, os.O_RDONLY)
        try:
            fcntl.ioctl(fd, QUOTA_CTL, struct.pack("QQ", QUOTA_CTL_ENABLE_SIMPLE, 0))
        finally:
            os.close(fd)
    elif mode != "none":
        raise ValueError(f"quota mode {mode!r}: simple, full or none")


def sysfs(path, name):
    """/sys/fs/btrfs/<uuid>/qgroups/<name> of the filesystem at ``path``; None when absent
    (``mode`` says qgroup or squota, ``inconsistent`` 0 or 1; both absent when quotas are off)."""
    uuid = btrfs("filesystem", "show", path).stdout.split("uuid:")[1].split()[0]
    try:
        with open(f"/sys/fs/btrfs/{uuid}/qgroups/{name}", encoding="ascii") as handle:
            return handle.read().strip()
    except FileNotFoundError:
        return None


def mode_of(path):
    """simple, full or none, as the filesystem says (kernels before 6.7 have no mode file: full)."""
    mode = sysfs(path, "mode")
    if mode is None:
        return "full" if btrfs("qgroup", "show", path, check=False).returncode == 0 else "none"
    return {"squota": "simple", "qgroup": "full"}[mode]
