# -*- coding: utf-8 -*-
# Copyright: (c) 2026, homelab.pixels contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # Connection options of every homelab.pixels module and controller-side plugin.
    # No defaults and no env entries on purpose: an unset option falls back to PIXELS_*,
    # then config.toml, then the default, in our code (settings.resolve).
    DOCUMENTATION = r"""
options:
  socket:
    description:
      - Path of the local Incus unix socket.
      - Ignored when O(remote) is set.
      - Falls back to E(PIXELS_INCUS_SOCKET), then C(socket) in the C([incus]) section of the
        pixels config file, then V(/var/lib/incus/unix.socket).
    type: path
  remote:
    description:
      - URL of a remote Incus daemon, such as V(https://incus.lan:8443).
      - Needs O(client_cert) and O(client_key) trusted by the server
        (C(incus config trust add-certificate)).
      - Falls back to E(PIXELS_INCUS_REMOTE), then C(remote) in C([incus]).
    type: str
  client_cert:
    description:
      - PEM client certificate for O(remote).
      - Falls back to E(PIXELS_INCUS_CLIENT_CERT), then C(client_cert) in C([incus]).
    type: path
  client_key:
    description:
      - PEM private key of O(client_cert). Only its path is used; it never ends up in a variable.
      - Falls back to E(PIXELS_INCUS_CLIENT_KEY), then C(client_key) in C([incus]).
    type: path
  server_cert:
    description:
      - The remote server's own certificate (C(/var/lib/incus/server.crt) on the Incus host).
        It is pinned by fingerprint; E(REQUESTS_CA_BUNDLE) and E(CURL_CA_BUNDLE) cannot override it.
      - Without it the server must present a certificate the system trusts.
      - Falls back to E(PIXELS_INCUS_SERVER_CERT), then C(server_cert) in C([incus]).
    type: path
  validate_certs:
    description:
      - Verify the remote server's TLS certificate. Verification is never skipped silently;
        only V(false) here turns it off.
      - Falls back to E(PIXELS_INCUS_VALIDATE_CERTS), then C(validate_certs) in C([incus]),
        then V(true).
    type: bool
  project:
    description:
      - Incus project the sandboxes live in.
      - Falls back to E(PIXELS_INCUS_PROJECT), then C(project) in C([incus]), then V(default).
    type: str
  config_file:
    description:
      - Path of the pixels CLI config file read for fallbacks.
      - Defaults to E(PIXELS_CONFIG), then C($XDG_CONFIG_HOME/pixels/config.toml)
        (C(~/.config/pixels/config.toml)). A missing default file is ignored; a missing
        file named here is an error.
    type: path
"""

    # homelab.pixels.connection.module
    MODULE = r"""
options: {}
requirements:
  - pylxd >= 2.4 on the host that runs the module (usually the controller, see the README)
notes:
  - Option values come from the task, then the E(PIXELS_*) environment variables, then the
    pixels CLI's C(config.toml), then the defaults, so users of the pixels CLI can switch
    without rewriting their settings.
  - Set connection options once for all modules with C(module_defaults) and the action group
    C(group/homelab.pixels.pixels).
  - Sandboxes are Incus instances named C(px-<name>); O(name) takes the bare name.
"""

    # homelab.pixels.connection.plugin
    PLUGIN = r"""
options: {}
requirements:
  - pylxd >= 2.4 in the Python that runs Ansible on the controller
notes:
  - Option values come from the plugin's configuration, then the E(PIXELS_*) environment
    variables, then the pixels CLI's C(config.toml), then the defaults, as for the
    homelab.pixels modules.
"""
