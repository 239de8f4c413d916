# -*- coding: utf-8 -*-
"""The host nftables layer under parallel tasks, on the real host nftables (no Incus needed)."""

import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import EGRESS_TABLE_TAG
from ansible_collections.homelab.pixels.plugins.module_utils import egress_host

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
