# -*- coding: utf-8 -*-
# Copyright: (c) 2026, homelab.pixels contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Test-only stdout callback: every task result and the stats as one JSON document.

ansible-core 2.19 moved its json callback to ansible.posix, which Galaxy would
have to provide; the tests only need this much of it.
"""

from __future__ import annotations

import json

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = r"""
name: results_json
type: stdout
short_description: Task results and stats as JSON (homelab.pixels tests only)
description:
  - Prints one JSON document with every task result and the play stats.
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "stdout"
    CALLBACK_NAME = "results_json"

    def __init__(self):
        super().__init__()
        self.tasks = []

    def _record(self, result, **extra):
        data = dict(result._result, **extra)
        self.tasks.append({"task": {"name": result._task.get_name()}, "hosts": {result._host.get_name(): data}})

    def v2_runner_on_ok(self, result):
        self._record(result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._record(result, failed=True)

    def v2_runner_on_skipped(self, result):
        self._record(result, skipped=True)

    def v2_runner_on_unreachable(self, result):
        self._record(result, unreachable=True)

    def v2_playbook_on_stats(self, stats):
        summary = {host: stats.summarize(host) for host in sorted(stats.processed)}
        self._display.display(json.dumps({"plays": [{"tasks": self.tasks}], "stats": summary}, default=str))
