"""The incus_host role's btrfs quota modes, on loop-backed pools of the test's own: its storage
tasks only (install, daemon, bridge and profile are the molecule scenario's), so nothing of the
user's is changed."""

import subprocess

import pytest

import btrfs_quota
from conftest import PROJECT

PLAY = """
- name: Incus host storage with a pool of the test's own
  hosts: localhost
  gather_facts: true
  gather_subset: ['!all', '!min', 'distribution', 'platform']
  tasks:
    - name: The role's storage tasks (the driver's choice, then the pool)
      ansible.builtin.include_role:
        name: homelab.pixels.incus_host
        tasks_from: "{{ item }}"
      loop: [storage_driver, storage]
      vars:
        incus_host_install: false
        incus_host_storage_size: 1GiB
"""
REPORT = "homelab.pixels.incus_host : Report the quota mode"


def drop(pool):
    subprocess.run(["incus", "storage", "delete", pool], capture_output=True, check=False)


@pytest.fixture
def pool():
    unavailable = btrfs_quota.loop_pools_unavailable()
    if unavailable:
        pytest.skip(f"no btrfs pool of the test's own here: {unavailable}")
    name = f"{PROJECT}-role"
    drop(name)
    yield name
    drop(name)


def converge(ansible, pool, quota=None):
    extra = {"incus_host_storage_pool": pool}
    if quota is not None:
        extra["incus_host_btrfs_quota"] = quota
    run = ansible.playbook(PLAY, extra_vars=extra)
    assert run.rc == 0 and not run.failed, run.stdout[-4000:] + run.stderr[-2000:]
    return run


def recorded(pool):
    return subprocess.run(["incus", "storage", "get", pool, btrfs_quota.MODE_KEY],
                          capture_output=True, text=True, check=True).stdout.strip()


def test_default_is_simple_quotas_or_says_why_not(ansible, pool):
    run = converge(ansible, pool)
    path = f"{btrfs_quota.POOLS_DIR}/{pool}"
    message = run.result(REPORT)["msg"]
    if btrfs_quota.kernel_has_simple_quotas() and btrfs_quota.progs_have_simple_quotas():
        assert btrfs_quota.mode_of(path) == "simple", message
        assert recorded(pool) == "simple"
        assert f"pool {pool}: simple" in message and "checkpoint sizes are unknown" in message
    else:  # the fallback: no accounting, and the reason in the output
        assert btrfs_quota.mode_of(path) == "none", message
        assert recorded(pool) == "none"
        assert f"pool {pool}: none" in message and "falling back from simple: simple quotas need" in message
    assert converge(ansible, pool).changed == 0


def test_full_stays_full_when_simple_is_asked_later(ansible, pool):
    converge(ansible, pool, True)  # the old boolean: full quota groups
    path = f"{btrfs_quota.POOLS_DIR}/{pool}"
    assert btrfs_quota.mode_of(path) == "full" and recorded(pool) == "full"
    again = converge(ansible, pool, "simple")
    assert again.changed == 0
    assert btrfs_quota.mode_of(path) == "full"
    message = again.result(REPORT)["msg"]
    assert f"pool {pool}: full" in message and "keeps its mode; not simple" in message, message


def test_a_wrong_value_names_the_variable_and_none_turns_nothing_on(ansible, pool):
    run = ansible.playbook(PLAY, extra_vars={"incus_host_storage_pool": pool, "incus_host_btrfs_quota": "fast"})
    assert run.rc != 0
    assert "incus_host_btrfs_quota is 'fast': use simple, full or none" in run.stdout, run.stdout[-3000:]
    converge(ansible, pool, "none")
    assert btrfs_quota.mode_of(f"{btrfs_quota.POOLS_DIR}/{pool}") == "none"
    assert recorded(pool) == "none"
