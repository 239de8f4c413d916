# -*- coding: utf-8 -*-
# Copyright: (c) 2026, homelab.pixels contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A pixels module run in the controller's process by its action plugin: no module start per task,
and pylxd imported once. The module file keeps the documentation and the same logic."""

from __future__ import annotations

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.plugins.action import ActionBase

from ansible_collections.homelab.pixels.plugins.module_utils.errors import PixelsError
from ansible_collections.homelab.pixels.plugins.module_utils.incus import HAS_PYLXD
from ansible_collections.homelab.pixels.plugins.module_utils.pixels_module import CONNECTION_ARGS


class PixelsAction(ActionBase):
    """Subclasses name their MODULE, give its ARGUMENT_SPEC (without the connection options) and
    implement act(params), which returns the result keys or raises PixelsError."""

    TRANSFERS_FILES = False
    _requires_connection = False
    MODULE = ""
    ARGUMENT_SPEC: dict = {}

    def act(self, params):
        raise NotImplementedError

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        validation = ArgumentSpecValidator(dict(CONNECTION_ARGS, **self.ARGUMENT_SPEC)).validate(self._task.args)
        if validation.error_messages:
            result.update(failed=True, msg="; ".join(validation.error_messages))
            return result
        if not HAS_PYLXD:
            result.update(failed=True, msg=f"{self.MODULE} needs pylxd in the Python that runs ansible-playbook: "
                                           "pip install pylxd (see requirements.txt).")
            return result
        try:
            result.update(self.act(validation.validated_parameters))
        except PixelsError as exc:
            result.update(failed=True, msg=exc.message, **exc.details)
        return result
