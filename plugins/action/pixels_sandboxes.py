# -*- coding: utf-8 -*-
# Copyright: (c) 2026, homelab.pixels contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""pixels_sandboxes in the controller's process: threads share one Python, with pylxd already
imported, instead of a module start per task (what makes one sandbox through a playbook fast)."""

from __future__ import annotations

from ansible_collections.homelab.pixels.plugins.module_utils.container import MANY_ARGUMENT_SPEC
from ansible_collections.homelab.pixels.plugins.modules.pixels_sandboxes import run_many
from ansible_collections.homelab.pixels.plugins.plugin_utils.pixels_action import PixelsAction


class ActionModule(PixelsAction):
    MODULE = "pixels_sandboxes"
    ARGUMENT_SPEC = MANY_ARGUMENT_SPEC

    def act(self, params):
        data, failure = run_many(params, bool(self._task.check_mode))
        if not self._task.diff:
            data.pop("diff")
        if failure:
            data.update(failed=True, msg=failure)
        return data
