# -*- coding: utf-8 -*-
# Copyright: (c) 2026, homelab.pixels contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""pixels_site_plan in the controller's process: every site run starts with it, and starting a
module costs more than the plan itself (a listing of Incus and some checks)."""

from __future__ import annotations

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.plugins.action import ActionBase

from ansible_collections.homelab.pixels.plugins.module_utils.errors import PixelsError
from ansible_collections.homelab.pixels.plugins.module_utils.incus import HAS_PYLXD, IncusBackend
from ansible_collections.homelab.pixels.plugins.module_utils.pixels_module import CONNECTION_ARGS
from ansible_collections.homelab.pixels.plugins.module_utils.settings import CONNECTION_KEYS, resolve
from ansible_collections.homelab.pixels.plugins.modules.pixels_site_plan import ARGUMENT_SPEC, site_plan


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        validation = ArgumentSpecValidator(dict(CONNECTION_ARGS, **ARGUMENT_SPEC)).validate(self._task.args)
        if validation.error_messages:
            result.update(failed=True, msg="; ".join(validation.error_messages))
            return result
        params = validation.validated_parameters
        if not HAS_PYLXD:
            result.update(failed=True, msg="pixels_site_plan needs pylxd in the Python that runs ansible-playbook: "
                                           "pip install pylxd (see requirements.txt).")
            return result
        try:
            backend = IncusBackend(**resolve(params, CONNECTION_KEYS, config_file=params.get("config_file")))
            try:
                data = site_plan(backend, params)
            finally:
                backend.close()
        except PixelsError as exc:
            result.update(failed=True, msg=exc.message, **exc.details)
            return result
        result.update(changed=False, **data)
        return result
