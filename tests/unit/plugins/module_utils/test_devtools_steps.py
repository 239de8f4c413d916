import json

import pytest

from ansible_collections.homelab.pixels.plugins.module_utils.devtools import overall, read_status, tail


def write_status(directory, steps, installer="npm"):
    (directory / "steps").write_text("".join(f"{name}\n" for name, _state in steps))
    (directory / "installer").write_text(installer + "\n")
    for name, state in steps:
        if state is not None:
            (directory / f"{name}.status").write_text(json.dumps({"state": state, "rc": None, "started": 1, "finished": None}))


@pytest.mark.parametrize("states, expected", [
    ([], "pending"),
    (["pending", "pending"], "pending"),
    (["done", "done"], "done"),
    (["done", "running", "pending"], "running"),
    (["done", "pending"], "running"),
    (["failed", "pending"], "failed"),
    (["done", "failed", "done"], "failed"),
    (["failed", "running"], "running"),
])
def test_overall(states, expected):
    assert overall(states) == expected


def test_absent(tmp_path):
    assert read_status(str(tmp_path / "none")) == {"state": "absent", "installer": None, "steps": [], "failed_steps": []}


def test_steps_in_order_with_log_tails(tmp_path):
    write_status(tmp_path, [("node", "done"), ("claude", "failed"), ("codex", None)])
    (tmp_path / "claude.log").write_text("".join(f"line {i}\n" for i in range(100)))
    (tmp_path / "claude.status").write_text(json.dumps({"state": "failed", "rc": 7, "started": 5, "finished": 9}))
    status = read_status(str(tmp_path), tail_lines=3)
    assert status["state"] == "failed"
    assert status["installer"] == "npm"
    assert status["failed_steps"] == ["claude"]
    assert [s["name"] for s in status["steps"]] == ["node", "claude", "codex"]
    claude = status["steps"][1]
    assert claude == {"name": "claude", "state": "failed", "rc": 7, "started": 5, "finished": 9,
                      "log_tail": "line 97\nline 98\nline 99"}
    assert status["steps"][2]["state"] == "pending"  # no status file yet
    assert status["steps"][0]["log_tail"] == ""


def test_garbled_status_is_pending(tmp_path):
    write_status(tmp_path, [("node", None)])
    (tmp_path / "node.status").write_text("{not json")
    assert read_status(str(tmp_path))["steps"][0]["state"] == "pending"
    (tmp_path / "node.status").write_text('{"state": "exploded"}')
    assert read_status(str(tmp_path))["steps"][0]["state"] == "pending"


def test_tail_reads_only_the_end(tmp_path):
    big = tmp_path / "big.log"
    big.write_bytes(b"x" * 1_000_000 + b"\nlast \xff line\n")
    assert tail(str(big), 1) == "last \ufffd line"
    assert tail(str(big), 0) == ""
    assert tail(str(tmp_path / "missing"), 5) == ""


def test_running_without_the_unit_is_failed(tmp_path):
    """A sandbox stopped or cloned mid-install: no step waits forever."""
    write_status(tmp_path, [("node", "done"), ("claude", "running"), ("codex", "pending")])
    (tmp_path / "claude.log").write_text("added 3 packages\n")
    assert read_status(str(tmp_path), unit_active=lambda: True)["state"] == "running"
    assert read_status(str(tmp_path), unit_active=lambda: None)["state"] == "running"
    assert read_status(str(tmp_path))["state"] == "running"
    status = read_status(str(tmp_path), unit_active=lambda: False)
    assert status["state"] == "failed" and status["failed_steps"] == ["claude"]
    assert status["steps"][1]["log_tail"].startswith("added 3 packages\n(interrupted")
    assert status["steps"][2]["state"] == "pending"


def test_a_unit_starting_or_ending_meanwhile_is_not_interrupted(tmp_path):
    """systemd says inactive just before the unit starts (or just after it ends): the steps it
    changed in between are what they say, not interrupted."""
    write_status(tmp_path, [("node", "pending"), ("claude", "pending")])

    def starts_now():
        write_status(tmp_path, [("node", "running"), ("claude", "pending")])
        return False
    status = read_status(str(tmp_path), unit_active=starts_now)
    assert status["state"] == "running" and status["failed_steps"] == []

    def ends_now():
        write_status(tmp_path, [("node", "done"), ("claude", "done")])
        return False
    write_status(tmp_path, [("node", "done"), ("claude", "running")])
    assert read_status(str(tmp_path), unit_active=ends_now)["state"] == "done"
