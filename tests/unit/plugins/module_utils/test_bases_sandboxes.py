"""ensure_many's own checks (before any sandbox is touched) and its error collection, with a
stand-in for ensure's backend: pure logic, the real calls are in test_site.py."""

import pytest

from ansible_collections.homelab.pixels.plugins.module_utils import container
from ansible_collections.homelab.pixels.plugins.module_utils.errors import PixelsError


def params(*names, parallel=4):
    return {"sandboxes": [{"name": n} for n in names], "parallel": parallel, "wait": True,
            "wait_timeout": 10, "stop_timeout": 5}


def no_backend():
    raise AssertionError("no sandbox may be touched")


def test_duplicates_refused_before_anything():
    with pytest.raises(PixelsError, match="a, b appear more than once"):
        container.ensure_many(params("a", "b", "a", "b", "c"), False, no_backend, None)


def test_parallel_at_least_one():
    with pytest.raises(PixelsError, match="parallel=0 is out of range: give how many sandboxes to work on at the same time, at least 1"):
        container.ensure_many(params("a", parallel=0), False, no_backend, None)


def test_failures_are_collected_in_order(monkeypatch):
    def fake_ensure(entry):
        if entry.params["name"].startswith("bad"):
            raise PixelsError(f"{entry.params['name']} broke", hint="x")
        assert entry.params["wait_timeout"] == 10 and entry.check_mode is True
        return {"changed": True, "sandbox": {"name": entry.params["name"]}, "diff": {}}

    monkeypatch.setattr(container, "ensure", fake_ensure)
    results, failure = container.ensure_many(params("ok1", "bad1", "ok2", "bad2"), True, no_backend, None)
    assert [r["name"] for r in results] == ["ok1", "bad1", "ok2", "bad2"]
    assert results[1] == {"name": "bad1", "failed": True, "changed": False, "msg": "bad1 broke", "hint": "x"}
    assert failure == "bad1: bad1 broke bad2: bad2 broke"
