"""pixels_checkpoint and pixels_checkpoint_info against a real Incus."""

import subprocess

import pytest

import btrfs_quota
from conftest import PROJECT, in_sandbox, snapshot_names, wait_for


def test_checkpoint_create_list_restore_delete(ansible, incus, cleanup):
    ansible.module("pixels_container", name="cp")
    in_sandbox("px-cp", "echo before > /root/state")

    made = ansible.module("pixels_checkpoint", name="cp", label="one")
    assert made["changed"] and made["checkpoint"]["label"] == "one" and made["checkpoints"] == ["one"]
    assert snapshot_names(incus, "px-cp") == ["one"]
    assert ansible.module("pixels_checkpoint", name="cp", label="one")["changed"] is False

    in_sandbox("px-cp", "echo after > /root/state; touch /root/new")
    stamped = ansible.module("pixels_checkpoint", name="cp")
    assert stamped["changed"] and stamped["checkpoint"]["label"].startswith("px-")
    assert snapshot_names(incus, "px-cp") == ["one", stamped["checkpoint"]["label"]]

    listed = ansible.module("pixels_checkpoint_info", name="cp")["checkpoints"]
    assert [c["label"] for c in listed] == ["one", stamped["checkpoint"]["label"]]
    for checkpoint in listed:
        assert checkpoint["created_at"] and checkpoint["stateful"] is False
    only = ansible.module("pixels_checkpoint_info", name="cp", label="one")["checkpoints"]
    assert [c["label"] for c in only] == ["one"]

    restored = ansible.module("pixels_checkpoint", name="cp", label="one", state="restored")
    assert restored["changed"], restored
    assert in_sandbox("px-cp", "cat /root/state").strip() == "before"
    assert in_sandbox("px-cp", "test -e /root/new && echo yes || echo no").strip() == "no"
    assert incus.instances.get("px-cp").status == "Running"
    assert ansible.module("pixels_container_info", name="cp")["sandboxes"][0]["ipv4"]

    deleted = ansible.module("pixels_checkpoint", name="cp", label="one", state="absent")
    assert deleted["changed"] and "one" not in deleted["checkpoints"]
    assert snapshot_names(incus, "px-cp") == [stamped["checkpoint"]["label"]]
    assert ansible.module("pixels_checkpoint", name="cp", label="one", state="absent")["changed"] is False


def test_restore_of_a_stopped_sandbox_leaves_it_stopped(ansible, incus, cleanup):
    ansible.module("pixels_container", name="cpstop")
    in_sandbox("px-cpstop", "echo v1 > /root/v")
    ansible.module("pixels_checkpoint", name="cpstop", label="v1")
    in_sandbox("px-cpstop", "echo v2 > /root/v")
    ansible.module("pixels_container", name="cpstop", state="stopped")
    assert ansible.module("pixels_checkpoint", name="cpstop", label="v1", state="restored")["changed"]
    assert incus.instances.get("px-cpstop").status == "Stopped"
    ansible.module("pixels_container", name="cpstop", state="started")
    assert in_sandbox("px-cpstop", "cat /root/v").strip() == "v1"


def test_checkpoint_check_mode(ansible, incus, cleanup):
    ansible.module("pixels_container", name="cpcheck")
    result = ansible.adhoc("pixels_checkpoint", check=True, diff=True, name="cpcheck", label="x")
    assert result["changed"] and result["diff"]["after"]["checkpoints"] == ["x"]
    assert snapshot_names(incus, "px-cpcheck") == []
    ansible.module("pixels_checkpoint", name="cpcheck", label="x")
    in_sandbox("px-cpcheck", "echo after-x > /root/marker")
    assert ansible.adhoc("pixels_checkpoint", check=True, name="cpcheck", label="x", state="absent")["changed"]
    assert ansible.adhoc("pixels_checkpoint", check=True, name="cpcheck", label="x", state="restored")["changed"]
    assert snapshot_names(incus, "px-cpcheck") == ["x"]
    # a check-mode restore restored nothing: what was written after the checkpoint is still there
    assert in_sandbox("px-cpcheck", "cat /root/marker").strip() == "after-x"


def test_destroy_removes_checkpoints(ansible, incus, cleanup):
    ansible.module("pixels_container", name="cpgone", state="stopped")
    ansible.module("pixels_checkpoint", name="cpgone", label="a")
    assert ansible.module("pixels_container", name="cpgone", state="absent")["changed"]
    assert not incus.instances.exists("px-cpgone")
    again = ansible.module("pixels_container", name="cpgone", state="stopped")
    assert again["sandbox"]["checkpoints"] == [] and snapshot_names(incus, "px-cpgone") == []


@pytest.fixture(scope="module")
def quota_pools(incus):
    """Loop-backed btrfs pools of the tests' own, one with full quota groups and one with simple
    quotas, their mode recorded in user.pixels.btrfs_quota as the incus_host role does."""
    unavailable = btrfs_quota.loop_pools_unavailable()
    if unavailable:
        pytest.skip(f"no btrfs pool of the tests' own here: {unavailable}")
    pools = {mode: f"{PROJECT}-{mode}" for mode in ("full", "simple")}
    try:
        for mode, pool in pools.items():
            subprocess.run(["incus", "storage", "delete", pool], capture_output=True, check=False)  # leftovers
            subprocess.run(["incus", "storage", "create", pool, "btrfs", "size=2GiB"], capture_output=True, check=True)
            btrfs_quota.enable(f"{btrfs_quota.POOLS_DIR}/{pool}", mode)
            subprocess.run(["incus", "storage", "set", pool, f"{btrfs_quota.MODE_KEY}={mode}"], check=True)
        yield pools
    finally:
        for pool in pools.values():
            subprocess.run(["incus", "storage", "delete", pool], capture_output=True, check=False)


def incus_size(incus, instance, label):
    return incus.api.instances[instance].snapshots[label].get().json()["metadata"]["size"]


@pytest.mark.parametrize("mode", ["full", "simple"])
def test_checkpoint_size_follows_the_pools_quota_mode(mode, quota_pools, ansible, incus, cleanup):
    """Full quota groups: a checkpoint that alone holds 8 MiB reports at least 8 MiB. Simple quotas
    charge those 8 MiB to the sandbox that wrote them: Incus says the checkpoint holds a few KiB,
    which pixels_checkpoint_info reports as unknown (null), not as a size."""
    name, instance = f"cpq{mode}", f"px-cpq{mode}"
    pool = quota_pools[mode]
    made = ansible.module("pixels_container", name=name, pool=pool)
    assert not made.get("failed"), made
    in_sandbox(instance, "head -c 8388608 /dev/urandom > /root/blob; sync")
    ansible.module("pixels_checkpoint", name=name, label="held")
    in_sandbox(instance, "rm /root/blob; sync")
    btrfs_quota.btrfs("filesystem", "sync", f"{btrfs_quota.POOLS_DIR}/{pool}")

    def listed_size():
        return ansible.module("pixels_checkpoint_info", name=name, label="held")["checkpoints"][0]["size"]

    if mode == "full":
        # accounted at a transaction commit: give it a few
        assert wait_for(lambda: (listed_size() or 0) >= 8388608, timeout=30, what="a size of 8 MiB")
    else:
        assert incus_size(incus, instance, "held") < 1048576  # what Incus says: not the 8 MiB it holds
        assert listed_size() is None

        def usage():
            return incus.api.instances[instance].state.get().json()["metadata"]["disk"]["root"]["usage"]
        assert wait_for(lambda: usage() >= 8388608, timeout=30, what="the sandbox charged with the 8 MiB")
