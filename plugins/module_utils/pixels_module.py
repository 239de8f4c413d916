# -*- coding: utf-8 -*-
# Copyright: (c) 2026, homelab.pixels contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What every homelab.pixels module shares: connection options, fallbacks, errors."""

from __future__ import annotations

import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.homelab.pixels.plugins.module_utils.errors import PixelsError
from ansible_collections.homelab.pixels.plugins.module_utils.incus import (
    HAS_PYLXD,
    PYLXD_IMPORT_ERROR,
    IncusBackend,
)
from ansible_collections.homelab.pixels.plugins.module_utils.settings import CONNECTION_KEYS, resolve

# Defaults are None so that unset options fall back to PIXELS_* and config.toml.
CONNECTION_ARGS = dict(
    socket=dict(type="path"),
    remote=dict(type="str"),
    client_cert=dict(type="path"),
    client_key=dict(type="path", no_log=False),
    server_cert=dict(type="path"),
    project=dict(type="str"),
    validate_certs=dict(type="bool"),
    config_file=dict(type="path"),
)

# Modules that start sandboxes (doc fragment homelab.pixels.wait).
WAIT_ARGS = dict(
    wait=dict(type="bool", default=True),
    wait_timeout=dict(type="int", default=120),
)


class PixelsModule(AnsibleModule):
    """AnsibleModule with the connection options and a lazily built backend."""

    def __init__(self, argument_spec, **kwargs):
        spec = dict(CONNECTION_ARGS)
        spec.update(argument_spec)
        super().__init__(argument_spec=spec, **kwargs)
        if not HAS_PYLXD:
            self.fail_json(
                msg=missing_required_lib("pylxd", reason="to talk to the Incus API"),
                exception="".join(traceback.format_exception_only(type(PYLXD_IMPORT_ERROR), PYLXD_IMPORT_ERROR)),
            )
        self._backend = None

    def settings(self, *names):
        """Resolved values (task > PIXELS_* > config.toml > default) for names."""
        return resolve(self.params, names, config_file=self.params.get("config_file"))

    @property
    def backend(self):
        if self._backend is None:
            self._backend = IncusBackend(**self.settings(*CONNECTION_KEYS))
        return self._backend

    def run(self, main):
        """Call main(self); a PixelsError becomes a clean failure, never a traceback."""
        try:
            main(self)
        except PixelsError as exc:
            self.fail_json(msg=exc.message, **exc.details)
