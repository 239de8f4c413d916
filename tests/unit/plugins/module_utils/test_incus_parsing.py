import pytest

from ansible_collections.homelab.pixels.plugins.module_utils.incus_api import (
    checkpoint_from_api,
    checkpoint_sizes_known,
    parse_memory_mib,
    sandbox_from_api,
)


@pytest.mark.parametrize("value, mib", [
    ("2048MiB", 2048), ("2GiB", 2048), ("1073741824", 1024), ("512MB", 488), ("1TiB", 1048576),
    ("", None), (None, None), ("50%", None),
])
def test_parse_memory(value, mib):
    assert parse_memory_mib(value) == mib


def test_sandbox_from_full_instance():
    data = {
        "name": "px-box",
        "status": "Running",
        "created_at": "2026-01-01T00:00:00Z",
        "description": "d",
        "config": {"limits.cpu": "2"},
        "expanded_config": {"limits.cpu": "2", "limits.memory": "1GiB", "user.pixels.image": "debian/12",
                            "user.pixels.source": "base:ready", "volatile.eth0.hwaddr": "x"},
        "snapshots": [{"name": "ready"}],
        "state": {"network": {
            "lo": {"addresses": [{"family": "inet", "address": "127.0.0.1", "scope": "local"}]},
            "eth0": {"addresses": [
                {"family": "inet", "address": "10.1.0.5", "scope": "global"},
                {"family": "inet6", "address": "fe80::1", "scope": "link"},
                {"family": "inet6", "address": "fd00::5", "scope": "global"},
            ]},
        }},
    }
    box = sandbox_from_api(data)
    assert (box.name, box.instance, box.status) == ("box", "px-box", "running")
    assert box.ipv4 == ["10.1.0.5"] and box.ipv6 == ["fd00::5"]
    assert (box.cpu, box.memory, box.image, box.source) == (2, 1024, "debian/12", "base:ready")
    assert box.checkpoints == ["ready"]
    assert box.metadata == {"user.pixels.image": "debian/12", "user.pixels.source": "base:ready"}
    assert box.as_dict()["name"] == "box"


def test_sandbox_without_state_or_limits():
    box = sandbox_from_api({"name": "px-x", "status": "Stopped", "config": {"limits.cpu": "0-3"}})
    assert box.status == "stopped" and box.ipv4 == [] and box.cpu is None and box.memory is None


def test_checkpoint_size_unknown_is_none():
    assert checkpoint_from_api({"name": "px-a/ready", "size": -1}).size is None
    cp = checkpoint_from_api({"name": "ready", "size": 4096, "created_at": "t"})
    assert (cp.label, cp.size, cp.created_at, cp.stateful) == ("ready", 4096, "t", False)


@pytest.mark.parametrize("config, known", [
    ({"user.pixels.btrfs_quota": "simple"}, False),
    ({"user.pixels.btrfs_quota": "full"}, True),
    ({"user.pixels.btrfs_quota": "none"}, True),  # Incus then says -1 itself
    ({}, True), (None, True),
])
def test_checkpoint_sizes_on_a_simple_quota_pool_are_unknown(config, known):
    assert checkpoint_sizes_known(config) is known
    assert checkpoint_from_api({"name": "ready", "size": 16384}, known).size == (16384 if known else None)
