# -*- coding: utf-8 -*-
"""The host nftables layer under parallel tasks, on the real host nftables (no Incus needed)."""

import os
import stat
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import EGRESS_TABLE_TAG
from ansible_collections.homelab.pixels.plugins.module_utils import egress_host
from ansible_collections.homelab.pixels.plugins.module_utils.errors import PixelsError

TABLE = f"pxegp_{EGRESS_TABLE_TAG}"  # a table per test project
PROJECT = "eg-par"
VIEW = {"mode": "allowlist", "cidrs": ["10.251.0.0/24"], "addresses": ["10.252.0.7"], "resolvers": ["10.250.0.1"]}


def nft(*args):
    return subprocess.run(["nft", *args], capture_output=True, text=True, check=False)


@pytest.fixture
def table():
    if egress_host.nft_available():
        pytest.fail(f"host nftables: {egress_host.nft_available()}")
    nft("delete", "table", "inet", TABLE)
    yield TABLE
    nft("delete", "table", "inet", TABLE)


def test_parallel_updates_keep_every_sandbox(table):
    """Eight forks at once, each cleaning away the same gone sandbox: every one loads, and the
    table ends with each sandbox's chain and key once and the base rules once."""
    egress_host.update_host_rules(table, "px-gone", ["10.250.0.99"], [], VIEW, PROJECT)
    names = [f"px-par{i}" for i in range(8)]
    start = threading.Barrier(len(names))

    def update(index):
        start.wait()
        egress_host.update_host_rules(table, names[index], [f"10.250.0.{index + 10}"], [], VIEW, PROJECT, live=names)

    with ThreadPoolExecutor(len(names)) as pool:
        list(pool.map(update, range(len(names))))  # re-raises a refused transaction

    current = egress_host.read_host_table(table)
    chains = {egress_host.chain_name(name, PROJECT) for name in names}
    assert {c for c in current["chains"] if c.startswith("sb_")} == chains
    assert current["src4"] == {f"10.250.0.{i + 10}": egress_host.chain_name(name, PROJECT) for i, name in enumerate(names)}
    for base in ("from_sandboxes_fwd", "from_sandboxes_in"):
        rules = nft("list", "chain", "inet", table, base).stdout
        assert rules.count("vmap @src4") == 1 and rules.count("vmap @src6") == 1, rules

    # removals in parallel: the last one takes the table with it
    with ThreadPoolExecutor(len(names)) as pool:
        removed = list(pool.map(lambda name: egress_host.update_host_rules(table, name, [], [], None, PROJECT), names))
    assert removed == [True] * len(names)
    assert nft("list", "table", "inet", table).returncode != 0
    assert egress_host.update_host_rules(table, names[0], [], [], None, PROJECT) is False


def run_as_nobody(command, timeout=10):
    return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "sh", "-c", command],
                          capture_output=True, text=True, check=False, timeout=timeout)


def test_no_local_user_can_hold_the_host_lock(table):
    """A local user of the host can neither open nor pre-create the table's lock, and a lock held
    too long (a hung task) fails the next task after its limit, naming the holder."""
    egress_host.update_host_rules(table, "px-one", ["10.250.0.10"], [], VIEW, PROJECT)
    path = egress_host.lock_path(table)
    directory = os.path.dirname(path)
    info = os.lstat(directory)
    assert stat.S_ISDIR(info.st_mode) and info.st_uid == 0 and stat.S_IMODE(info.st_mode) == 0o700
    tried = run_as_nobody(f"flock -x -w 1 {path} true; echo rc=$?; : > {path}.mine; echo made=$?")
    assert "rc=0" not in tried.stdout and "made=0" not in tried.stdout, tried
    # root's own hung task: the next one waits its limit, not forever
    holder = subprocess.Popen(["flock", "-x", path, "sleep", "60"], start_new_session=True)  # pylint: disable=consider-using-with
    try:
        subprocess.run(["sh", "-c", f"until ! flock -n {path} true; do sleep 0.05; done"], check=True, timeout=10)
        started = time.monotonic()
        with pytest.raises(PixelsError) as caught:
            egress_host.update_host_rules(table, "px-two", ["10.250.0.11"], [], VIEW, PROJECT, lock_timeout=2)
        waited = time.monotonic() - started
    finally:
        os.killpg(holder.pid, 9)  # flock and its sleep, which holds the lock too
        holder.wait()
    assert 2 <= waited < 5, waited
    assert f"stayed locked for 2 s by PID {holder.pid} (flock -x {path} sleep 60)" in caught.value.message
    assert egress_host.chain_name("px-two", PROJECT) not in egress_host.read_host_table(table)["chains"]
    assert egress_host.update_host_rules(table, "px-two", ["10.250.0.11"], [], VIEW, PROJECT, lock_timeout=2)
