# -*- coding: utf-8 -*-
# Copyright: (c) 2026, homelab.pixels contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Status files of the dev tools installer (homelab.pixels.devtools), read inside a sandbox.

The installer writes into its status directory:
  steps            the step names in order, one per line
  installer        mise or npm
  <step>.status    JSON {"state": pending|running|done|failed, "rc": int|null, "started": epoch|null,
                   "finished": epoch|null}
  <step>.log       the step's output
"""

from __future__ import annotations

import json
import os

from ansible_collections.homelab.pixels.plugins.module_utils.untrusted import printable

STATES = ("pending", "running", "done", "failed")


def tail(path, lines):
    """The last `lines` lines of a text file ('' when missing), reading at most 64 KiB, without
    terminal control sequences (the controller removes them again: this code runs in the sandbox)."""
    if lines <= 0:
        return ""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 65536))
            data = handle.read()
    except OSError:
        return ""
    text = printable(data.decode("utf-8", errors="replace"))
    return "\n".join(text.rstrip("\n").split("\n")[-lines:]) if text.strip() else ""


def _read(path):
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError:
        return None


def step_status(directory, name, tail_lines):
    raw = _read(os.path.join(directory, f"{name}.status"))
    try:
        data = json.loads(raw) if raw else {}
    except ValueError:
        data = {}
    state = data.get("state") if data.get("state") in STATES else "pending"
    return {
        "name": name,
        "state": state,
        "rc": data.get("rc"),
        "started": data.get("started"),
        "finished": data.get("finished"),
        "log_tail": tail(os.path.join(directory, f"{name}.log"), tail_lines),
    }


def overall(states):
    """One state for the whole installer from the steps' states."""
    if not states or all(s == "pending" for s in states):
        return "pending"
    if all(s == "done" for s in states):
        return "done"
    if "running" in states:
        return "running"
    if "failed" in states:
        return "failed"
    return "running"  # between two steps


INTERRUPTED = "(interrupted: the installer is no longer running; the next play runs it again)"


def _steps(directory, tail_lines):
    """The steps' statuses in order; None when the installer never ran here."""
    steps_text = _read(os.path.join(directory, "steps"))
    if steps_text is None:
        return None
    names = [line.strip() for line in steps_text.splitlines() if line.strip()]
    return [step_status(directory, name, tail_lines) for name in names]


def read_status(directory, tail_lines=20, unit_active=None):
    """The installer's status; state 'absent' when it never ran here.

    unit_active: a function telling whether the installer's unit runs (True, False, None when
    unknown). A step 'running' both before and after it said False was left so by a sandbox
    stopped or cloned mid-install: it turns 'failed', so that it is not waited for forever.
    Reading on both sides keeps a unit that starts or ends meanwhile from looking interrupted.
    """
    steps = _steps(directory, tail_lines)
    if steps is None:
        return {"state": "absent", "installer": None, "steps": [], "failed_steps": []}
    if unit_active is not None and unit_active() is False:
        was_running = {step["name"] for step in steps if step["state"] == "running"}
        steps = _steps(directory, tail_lines) or []
        for step in steps:
            if step["state"] == "running" and step["name"] in was_running:
                step["state"] = "failed"
                step["log_tail"] = (step["log_tail"] + "\n" if step["log_tail"] else "") + INTERRUPTED
    installer = (_read(os.path.join(directory, "installer")) or "").strip() or None
    return {
        "state": overall([s["state"] for s in steps]),
        "installer": installer,
        "steps": steps,
        "failed_steps": [s["name"] for s in steps if s["state"] == "failed"],
    }
