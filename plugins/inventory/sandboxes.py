# -*- coding: utf-8 -*-
# Copyright: (c) 2026, homelab.pixels contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: sandboxes
short_description: pixels sandboxes (Incus containers) as Ansible hosts
version_added: 0.1.0
description:
  - Makes every C(px-) sandbox of an Incus project an Ansible host, named by its bare sandbox
    name (the instance C(px-mybox) is the host C(mybox)).
  - All sandboxes are read with two requests to the Incus API, whatever their number (Incus'
    recursion). First a listing without state; then the full listing with addresses and
    checkpoints or, when every sandbox is stopped, only the checkpoints from the storage pool's
    volume list (for the full listing Incus computes every instance's disk usage, about 4 ms
    each on btrfs or ZFS).
  - The local socket is read with the Python standard library; pylxd is loaded only for a
    remote Incus, so the plugin adds little to Ansible's start-up.
  - "The source file must be named C(pixels.yml), C(pixels.yaml), C(*.pixels.yml) or
    C(*.pixels.yaml) and hold C(plugin: homelab.pixels.sandboxes)."
  - Hosts connect with the C(homelab.pixels.incus) connection plugin (through the Incus API,
    found by the C(pixels_instance) host variable) unless O(connection=ssh).
  - "Host variables: C(ansible_host) (the first IPv4 address, when there is one),
    C(ansible_connection), C(pixels_instance), C(pixels_status), C(pixels_ipv4), C(pixels_ipv6),
    C(pixels_image), C(pixels_source), C(pixels_base), C(pixels_cpu), C(pixels_memory) (MiB),
    C(pixels_created_at), C(pixels_checkpoints), C(pixels_egress), C(pixels_description),
    C(pixels_metadata) (the C(user.*) configuration keys), C(pixels_project), and the connection
    settings for the connection plugin: C(pixels_incus_project) and either C(pixels_incus_socket)
    or C(pixels_incus_remote), C(pixels_incus_client_cert), C(pixels_incus_client_key) (its path),
    C(pixels_incus_server_cert), C(pixels_incus_validate_certs)."
  - "Groups: C(pixels) (every sandbox), one per status (C(pixels_running), C(pixels_stopped),
    C(pixels_frozen), C(pixels_error)), C(pixels_base_<base>) for the C(user.pixels.base) key and
    C(pixels_egress_<mode>) for the C(user.pixels.egress) key; characters other than letters,
    digits and C(_) become C(_). C(pixels), C(pixels_running) and C(pixels_stopped) always exist."
  - A value read from Incus (a description, a C(user.*) key, ...) that could be a Jinja template
    (a string with C({), C(}), C(%) or C(#)) is marked unsafe, so a sandbox cannot make the
    controller evaluate a template; every other value stays plain, so C(ansible-inventory --list)
    (what AWX and Automation Platform import) prints C(ansible_host) and the others as plain
    strings, not as C(__ansible_unsafe) objects.
author:
  - homelab.pixels developers (@homelab-pixels)
options:
  plugin:
    description:
      - The name of this plugin. It must be V(homelab.pixels.sandboxes) for the file to be
        read by this plugin.
    type: str
    required: true
    choices: [homelab.pixels.sandboxes]
  connection:
    description:
      - How Ansible reaches the sandboxes.
      - V(homelab.pixels.incus) goes through the Incus API (no SSH, no address needed); the
        connection plugin finds the instance from C(pixels_instance).
      - V(ssh) connects to C(ansible_host), the first IPv4 address, as O(ssh_user).
    type: str
    default: homelab.pixels.incus
    choices: [homelab.pixels.incus, ssh]
  ssh_user:
    description:
      - C(ansible_user) of the sandboxes when O(connection=ssh).
    type: str
    default: pixel
  status:
    description:
      - Only sandboxes with one of these statuses. All of them when empty.
    type: list
    elements: str
    choices: [running, stopped, frozen, error]
    default: []
  names:
    description:
      - Only sandboxes whose bare name matches one of these shell patterns (V(web-*), V(ci-?)).
        All of them when empty.
    type: list
    elements: str
    default: []
  exclude_names:
    description:
      - Leave out sandboxes whose bare name matches one of these shell patterns. Applied after
        O(names).
    type: list
    elements: str
    default: []
extends_documentation_fragment:
  - homelab.pixels.connection
  - homelab.pixels.connection.plugin
  - constructed
  - inventory_cache
notes:
  - With O(cache=true) the plugin caches the API's answer (every sandbox, before the filters)
    under a key made of the source file and the Incus endpoint and project; groups and variables
    are rebuilt from it, so changes of filters, O(compose), O(groups) or O(keyed_groups) apply
    without refreshing the cache. Use C(ansible-inventory --flush-cache) or
    C(meta) C(refresh_inventory) to read Incus again.
seealso:
  - module: homelab.pixels.pixels_container
  - module: homelab.pixels.pixels_container_info
"""

EXAMPLES = r"""
# sandboxes.pixels.yml: every sandbox of the default project on the local socket
plugin: homelab.pixels.sandboxes

# ---
# A remote Incus, one project, running sandboxes only, cached for five minutes
plugin: homelab.pixels.sandboxes
remote: https://incus.lan:8443
client_cert: ~/.config/pixels/client.crt
client_key: ~/.config/pixels/client.key
server_cert: ~/.config/pixels/server.crt
project: agents
status: [running]
cache: true
cache_plugin: ansible.builtin.jsonfile
cache_connection: ~/.cache/pixels/inventory
cache_timeout: 300

# ---
# Over SSH as the user pixel, some names only, with constructed groups and variables
plugin: homelab.pixels.sandboxes
connection: ssh
names: ["web-*", "api-*"]
exclude_names: ["*-old"]
compose:
  big: pixels_memory >= 4096
keyed_groups:
  - key: pixels_image
    prefix: image
  - key: pixels_checkpoints
    prefix: checkpoint
groups:
  clones: pixels_source is not none
  has_ready: "'ready' in pixels_checkpoints"

# ---
# Then: ansible-inventory -i sandboxes.pixels.yml --graph
#       ansible -i sandboxes.pixels.yml pixels_running -m ansible.builtin.ping
"""

import fnmatch
import hashlib
import os
import re
import sys

from ansible.errors import AnsibleParserError
from ansible.plugins.inventory import BaseInventoryPlugin, Cacheable, Constructable

from ansible_collections.homelab.pixels.plugins.module_utils.backend import META_BASE, META_EGRESS
from ansible_collections.homelab.pixels.plugins.module_utils.errors import PixelsError
from ansible_collections.homelab.pixels.plugins.module_utils.incus_api import UnixSocketReader
from ansible_collections.homelab.pixels.plugins.module_utils.settings import CONNECTION_KEYS, resolve
from ansible_collections.homelab.pixels.plugins.plugin_utils.template_safety import template_safe

# pylxd (module_utils.incus) is imported only for a remote Incus, and not on a cache hit.

CONNECTION_PLUGIN = "homelab.pixels.incus"
STATUSES = ("running", "stopped", "frozen", "error")
ALWAYS_GROUPS = ("pixels", "pixels_running", "pixels_stopped")
SOURCE_SUFFIXES = (".pixels.yml", ".pixels.yaml")
_UNSAFE_GROUP_CHARS = re.compile(r"[^A-Za-z0-9_]")


def group_part(value):
    """A value as part of a group name: anything but letters, digits and _ becomes _."""
    return _UNSAFE_GROUP_CHARS.sub("_", str(value))


def sandbox_groups(sandbox):
    """The plugin's own groups of a sandbox dict (as the backend's Sandbox.as_dict() gives it)."""
    metadata = sandbox.get("metadata") or {}
    groups = ["pixels", "pixels_" + group_part(sandbox.get("status") or "unknown")]
    if metadata.get(META_BASE):
        groups.append("pixels_base_" + group_part(metadata[META_BASE]))
    if metadata.get(META_EGRESS):
        groups.append("pixels_egress_" + group_part(metadata[META_EGRESS]))
    return groups


def selected(sandbox, status=None, names=None, exclude_names=None):
    """Whether a sandbox passes the status and name filters (empty filters pass everything)."""
    if status and sandbox.get("status") not in status:
        return False
    name = sandbox["name"]
    if names and not any(fnmatch.fnmatchcase(name, pattern) for pattern in names):
        return False
    return not any(fnmatch.fnmatchcase(name, pattern) for pattern in exclude_names or ())


def connection_vars(settings, connection=CONNECTION_PLUGIN, ssh_user="pixel"):
    """Host vars that choose the connection and tell our connection plugin where Incus is.

    ``settings`` are the resolved connection settings (settings.CONNECTION_KEYS). Paths of
    certificates and keys only: never their contents.
    """
    hostvars = {"ansible_connection": connection, "pixels_incus_project": settings.get("project") or "default"}
    if connection == "ssh":
        hostvars["ansible_user"] = ssh_user
    if settings.get("remote"):
        hostvars["pixels_incus_remote"] = settings["remote"]
        for key in ("client_cert", "client_key", "server_cert"):
            if settings.get(key):
                hostvars["pixels_incus_" + key] = settings[key]
        hostvars["pixels_incus_validate_certs"] = settings.get("validate_certs") is not False
    else:
        hostvars["pixels_incus_socket"] = settings.get("socket")
    return hostvars


def sandbox_vars(sandbox, project):
    """The pixels_* facts and ansible_host of a sandbox dict; what could template is unsafe."""
    metadata = sandbox.get("metadata") or {}
    hostvars = {
        "pixels_instance": sandbox["instance"],
        "pixels_status": sandbox.get("status"),
        "pixels_ipv4": list(sandbox.get("ipv4") or []),
        "pixels_ipv6": list(sandbox.get("ipv6") or []),
        "pixels_image": sandbox.get("image"),
        "pixels_source": sandbox.get("source"),
        "pixels_base": metadata.get(META_BASE),
        "pixels_cpu": sandbox.get("cpu"),
        "pixels_memory": sandbox.get("memory"),
        "pixels_created_at": sandbox.get("created_at"),
        "pixels_checkpoints": list(sandbox.get("checkpoints") or []),
        "pixels_egress": metadata.get(META_EGRESS),
        "pixels_description": sandbox.get("description") or "",
        "pixels_metadata": dict(metadata),
        "pixels_project": project or "default",
    }
    if hostvars["pixels_ipv4"]:
        hostvars["ansible_host"] = hostvars["pixels_ipv4"][0]
    return template_safe(hostvars)


def host_vars(sandbox, settings, connection=CONNECTION_PLUGIN, ssh_user="pixel"):
    """Every host var the plugin sets for a sandbox dict (before compose).

    The connection settings come from the inventory file, PIXELS_* or config.toml: they go
    through the same marking as the values from Incus."""
    hostvars = template_safe(connection_vars(settings, connection, ssh_user))
    hostvars.update(sandbox_vars(sandbox, settings.get("project")))
    return hostvars


def valid_payload(data):
    """Whether cached data looks like what _fetch stores (else it is read again)."""
    return isinstance(data, list) and all(
        isinstance(item, dict) and isinstance(item.get("name"), str) and isinstance(item.get("instance"), str)
        for item in data
    )


class InventoryModule(BaseInventoryPlugin, Constructable, Cacheable):

    NAME = "homelab.pixels.sandboxes"

    def verify_file(self, path):
        if not ("." + os.path.basename(path)).endswith(SOURCE_SUFFIXES):
            self.display.vvv(f"Skipping {path}: homelab.pixels.sandboxes reads files named pixels.yml, "
                             f"*.pixels.yml, pixels.yaml or *.pixels.yaml")
            return False
        return super().verify_file(path)

    def parse(self, inventory, loader, path, cache=True):
        super().parse(inventory, loader, path, cache)
        config = self._read_config_data(path)
        filters = self._filters()
        try:
            settings = self._settings(config)
            sandboxes = self._sandboxes(path, settings, cache)
        except PixelsError as exc:
            raise AnsibleParserError(exc.message) from None
        self._populate(sandboxes, settings, filters)

    # -- options ----------------------------------------------------------

    def _settings(self, config):
        """Connection settings: this file, then PIXELS_*, then config.toml, then the defaults."""
        params = {key: self.get_option(key) for key in CONNECTION_KEYS}
        # Ansible reads any word but yes/true/on/1 as false: a typo must not turn TLS
        # verification off, so the file's own value goes through the strict check.
        params["validate_certs"] = config.get("validate_certs")
        return resolve(params, CONNECTION_KEYS, config_file=self.get_option("config_file"),
                       origin="the inventory source")

    def _list_option(self, option, choices=None):
        values = self.get_option(option) or []
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise AnsibleParserError(f"{option} must be a list of strings, not {values!r}.")
        if choices:
            wrong = [v for v in values if v.lower() not in choices]
            if wrong:
                raise AnsibleParserError(
                    f"{option}={values!r}: {', '.join(map(repr, wrong))} is not one of {', '.join(choices)}.")
            values = [v.lower() for v in values]
        return values

    def _filters(self):
        """The filter options, checked before Incus is read."""
        return {
            "status": self._list_option("status", STATUSES),
            "names": self._list_option("names"),
            "exclude_names": self._list_option("exclude_names"),
        }

    # -- data -------------------------------------------------------------

    def _cache_key(self, path, settings):
        where = f"{settings.get('remote') or settings.get('socket')}\0{settings.get('project') or 'default'}"
        return f"{self.get_cache_key(path)}_{hashlib.sha256(where.encode()).hexdigest()[:8]}"

    def _sandboxes(self, path, settings, cache):
        """The raw payload (sandbox dicts, unfiltered), from the cache when allowed."""
        use_cache = self.get_option("cache")
        read_cache = use_cache and cache
        update_cache = use_cache and not cache
        key = self._cache_key(path, settings)
        if read_cache:
            try:
                data = self._cache[key]
            except KeyError:
                update_cache = True
            else:
                if valid_payload(data):
                    return data
                update_cache = True
        data = self._fetch(settings)
        if update_cache:
            self._cache[key] = data
        return data

    @staticmethod
    def _fetch(settings):
        """Every sandbox in a fixed number of requests (Incus recursion), as plain dicts.

        The local socket is read with the standard library (incus_api): importing pylxd
        would cost more than the request. A remote Incus goes through IncusBackend (pylxd),
        with its TLS checks and certificate pinning.
        """
        if settings.get("remote"):
            from ansible_collections.homelab.pixels.plugins.module_utils.incus import HAS_PYLXD, IncusBackend

            if not HAS_PYLXD:
                raise AnsibleParserError(
                    f"Reading a remote Incus needs the Python library pylxd in the Python that runs "
                    f"Ansible ({sys.executable}): pip install -r requirements.txt of homelab.pixels.")
            reader = IncusBackend(**settings)
        else:
            reader = UnixSocketReader(settings["socket"], settings.get("project"))
        return sorted((sandbox.as_dict() for sandbox in reader.list_sandboxes()), key=lambda s: s["name"])

    # -- inventory --------------------------------------------------------

    def _populate(self, sandboxes, settings, filters):
        connection = self.get_option("connection")
        ssh_user = self.get_option("ssh_user")
        strict = self.get_option("strict")
        compose = self.get_option("compose")
        groups = self.get_option("groups")
        keyed_groups = self.get_option("keyed_groups")

        for group in ALWAYS_GROUPS:
            self.inventory.add_group(group)
        for sandbox in sandboxes:
            if not selected(sandbox, **filters):
                continue
            # Incus allows letters, digits and - in names, and groups are made of those and _: plain
            # strings, which ansible-core 2.17/2.18 print as they are in --list's host lists.
            host = template_safe(sandbox["name"])
            hostvars = host_vars(sandbox, settings, connection, ssh_user)
            self.inventory.add_host(host)
            for group in sandbox_groups(sandbox):
                self.inventory.add_child(self.inventory.add_group(template_safe(group)), host)
            for key, value in hostvars.items():
                self.inventory.set_variable(host, key, value)
            # with inventory_hostname and group_names, as in ansible.builtin.constructed
            variables = self.inventory.get_host(host).get_vars()
            self._set_composite_vars(compose, variables, host, strict=strict)
            self._add_host_to_composed_groups(groups, variables, host, strict=strict)
            self._add_host_to_keyed_groups(keyed_groups, variables, host, strict=strict)
