"""pixels_checkpoint and pixels_checkpoint_info against a real Incus."""

import glob
import subprocess
import time

from conftest import in_sandbox, snapshot_names


def rescan_inconsistent_quotas():
    """btrfs marks its quota groups inconsistent after some subvolume deletions (many tests delete
    snapshots); Incus then reports wrong sizes until a rescan, as the incus_host role does at set-up."""
    for pool in glob.glob("/var/lib/incus/storage-pools/*"):
        shown = subprocess.run(["btrfs", "qgroup", "show", pool], capture_output=True, text=True, check=False)
        if "inconsistent" in shown.stderr + shown.stdout:
            subprocess.run(["btrfs", "quota", "rescan", "-w", pool], capture_output=True, check=False)


def test_checkpoint_create_list_restore_delete(ansible, incus, cleanup):
    ansible.module("pixels_container", name="cp")
    in_sandbox("px-cp", "echo before > /root/state")

    made = ansible.module("pixels_checkpoint", name="cp", label="one")
    assert made["changed"] and made["checkpoint"]["label"] == "one" and made["checkpoints"] == ["one"]
    assert ansible.module("pixels_checkpoint", name="cp", label="one")["changed"] is False

    # 8 MiB that only the checkpoint keeps once the sandbox deletes them
    in_sandbox("px-cp", "echo after > /root/state; touch /root/new;"
               " head -c 8388608 /dev/urandom > /root/blob; sync")
    stamped = ansible.module("pixels_checkpoint", name="cp")
    assert stamped["changed"] and stamped["checkpoint"]["label"].startswith("px-")

    in_sandbox("px-cp", "rm /root/blob; sync")
    rescan_inconsistent_quotas()

    listed = ansible.module("pixels_checkpoint_info", name="cp")["checkpoints"]
    assert [c["label"] for c in listed] == ["one", stamped["checkpoint"]["label"]]
    for checkpoint in listed:
        assert checkpoint["created_at"] and checkpoint["stateful"] is False
    # Sizes come from btrfs quota groups (the incus_host role enables them), which btrfs
    # accounts at its next transaction commit: give it a few commits.
    # btrfs-cleaner, still removing earlier tests' subvolumes, can leave them inconsistent again.
    for _attempt in range(60):
        if listed[1]["size"] and listed[1]["size"] >= 8388608:
            break
        time.sleep(1)
        rescan_inconsistent_quotas()
        listed = ansible.module("pixels_checkpoint_info", name="cp")["checkpoints"]
    assert listed[1]["size"] >= 8388608, listed
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
    assert ansible.adhoc("pixels_checkpoint", check=True, name="cpcheck", label="x", state="absent")["changed"]
    assert ansible.adhoc("pixels_checkpoint", check=True, name="cpcheck", label="x", state="restored")["changed"]
    assert snapshot_names(incus, "px-cpcheck") == ["x"]


def test_destroy_removes_checkpoints(ansible, incus, cleanup):
    ansible.module("pixels_container", name="cpgone", state="stopped")
    ansible.module("pixels_checkpoint", name="cpgone", label="a")
    assert ansible.module("pixels_container", name="cpgone", state="absent")["changed"]
    assert not incus.instances.exists("px-cpgone")
    again = ansible.module("pixels_container", name="cpgone", state="stopped")
    assert again["sandbox"]["checkpoints"] == []
