"""pixels_sandboxes' `parallel` option against a real Incus: how many sandboxes are worked on at the
same time, read from the creation and start times Incus records (not from wall-clock targets)."""

from datetime import datetime

import pytest

from conftest import incus_cli, instance_names
from site_helpers import instance


def lifetimes(names):
    """(created, last started) of each instance, as Incus recorded them."""
    times = []
    for name in names:
        data = instance(name)
        times.append((datetime.fromisoformat(data["created_at"]), datetime.fromisoformat(data["last_used_at"])))
    return times


def overlapping(times):
    """Pairs (i, j) where j was created after i was created but before i started."""
    return [(i, j) for i, (made_i, started_i) in enumerate(times) for j, (made_j, _started_j) in enumerate(times)
            if i != j and made_i <= made_j < started_i]


def test_parallel_sets_how_many_are_made_at_once(ansible, incus, golden, cleanup):
    """parallel=1: each sandbox is created only after the one before it has started (and got its
    address); parallel=3: the three are created side by side, one before another has started."""
    one = [{"name": f"sb-one{i}", "source": "golden:ready"} for i in range(3)]
    result = ansible.module("pixels_sandboxes", parallel=1, sandboxes=one)
    assert not result.get("failed") and result["changed"], result
    times = lifetimes([f"px-sb-one{i}" for i in range(3)])
    for (_made, started), (made_next, _started_next) in zip(times, times[1:]):
        assert made_next > started, times
    assert overlapping(times) == [], times
    # Few running at a time: every container's systemd takes inotify instances from one shared
    # per-user limit (fs.inotify.max_user_instances, 128 by default) and one too many dies at start.
    incus_cli("delete", "--force", *[f"px-sb-one{i}" for i in range(3)])

    three = [{"name": f"sb-three{i}", "source": "golden:ready"} for i in range(3)]
    result = ansible.module("pixels_sandboxes", parallel=3, sandboxes=three)
    assert not result.get("failed") and result["changed"], result
    times = lifetimes([f"px-sb-three{i}" for i in range(3)])
    assert overlapping(times), times


@pytest.mark.parametrize("parallel, needles", [
    (0, ["parallel=0 is out of range", "at least 1"]),
    (-2, ["parallel=-2 is out of range", "at least 1"]),
    ("many", ["parallel", "int"]),
])
def test_bad_parallel_is_refused_before_anything(ansible, incus, cleanup, parallel, needles):
    before = instance_names(incus)
    result = ansible.module("pixels_sandboxes", parallel=parallel, sandboxes=[{"name": "sb-bad", "image": "debian/12"}])
    assert result.get("failed"), result
    for needle in needles:
        assert needle in result["msg"], result["msg"]
    assert "Traceback" not in result["msg"]
    assert instance_names(incus) == before
