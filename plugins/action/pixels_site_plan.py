# -*- coding: utf-8 -*-
# Copyright: (c) 2026, homelab.pixels contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""pixels_site_plan in the controller's process: every site run starts with it, and starting a
module costs more than the plan itself (a listing of Incus and some checks)."""

from __future__ import annotations

from ansible_collections.homelab.pixels.plugins.module_utils.incus import IncusBackend
from ansible_collections.homelab.pixels.plugins.module_utils.settings import CONNECTION_KEYS, resolve
from ansible_collections.homelab.pixels.plugins.modules.pixels_site_plan import ARGUMENT_SPEC, site_plan
from ansible_collections.homelab.pixels.plugins.plugin_utils.pixels_action import PixelsAction


class ActionModule(PixelsAction):
    MODULE = "pixels_site_plan"
    ARGUMENT_SPEC = ARGUMENT_SPEC

    def act(self, params):
        backend = IncusBackend(**resolve(params, CONNECTION_KEYS, config_file=params.get("config_file")))
        try:
            return dict(changed=False, **site_plan(backend, params))
        finally:
            backend.close()
