# -*- coding: utf-8 -*-
# Copyright: (c) 2026, homelab.pixels contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""pixels_sandboxes in the controller's process: threads share one Python, with pylxd already
imported, instead of a module start per task (what makes one sandbox through a playbook fast)."""

from __future__ import annotations

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.plugins.action import ActionBase

from ansible_collections.homelab.pixels.plugins.module_utils.container import MANY_ARGUMENT_SPEC
from ansible_collections.homelab.pixels.plugins.module_utils.errors import PixelsError
from ansible_collections.homelab.pixels.plugins.module_utils.incus import HAS_PYLXD
from ansible_collections.homelab.pixels.plugins.module_utils.pixels_module import CONNECTION_ARGS
from ansible_collections.homelab.pixels.plugins.modules.pixels_sandboxes import run_many


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        validation = ArgumentSpecValidator(dict(CONNECTION_ARGS, **MANY_ARGUMENT_SPEC)).validate(self._task.args)
        if validation.error_messages:
            result.update(failed=True, msg="; ".join(validation.error_messages))
            return result
        if not HAS_PYLXD:
            result.update(failed=True, msg="pixels_sandboxes needs pylxd in the Python that runs ansible-playbook: "
                                           "pip install pylxd (see requirements.txt).")
            return result
        try:
            data, failure = run_many(validation.validated_parameters, bool(self._task.check_mode))
        except PixelsError as exc:
            result.update(failed=True, msg=exc.message, **exc.details)
            return result
        if not self._task.diff:
            data.pop("diff")
        result.update(data)
        if failure:
            result.update(failed=True, msg=failure)
        return result
