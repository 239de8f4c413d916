# -*- coding: utf-8 -*-
# Copyright: (c) 2026, homelab.pixels contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Incus REST API with the standard library only: payload parsing, the local socket's
checks and error messages, and a read-only client over the unix socket.

Plugins run inside every ``ansible``/``ansible-inventory`` process, where importing pylxd
(requests, urllib3, cryptography: about 0.15 s) would cost more than the request itself.
This module never imports pylxd; ``incus.IncusBackend`` (pylxd, remote HTTPS, every write)
builds on the same parsing and messages.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import stat
from urllib.parse import quote, urlencode

from ansible_collections.homelab.pixels.plugins.module_utils.backend import (
    META_IMAGE,
    META_SOURCE,
    Checkpoint,
    Sandbox,
)
from ansible_collections.homelab.pixels.plugins.module_utils.errors import PixelsError
from ansible_collections.homelab.pixels.plugins.module_utils.names import is_sandbox

_MEMORY_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*$", re.IGNORECASE)
_MEMORY_MIB = {"b": 1 / 1048576, "kb": 1000 / 1048576, "kib": 1 / 1024, "mb": 1e6 / 1048576,
               "mib": 1, "gb": 1e9 / 1048576, "gib": 1024, "tb": 1e12 / 1048576, "tib": 1048576}


# -- payloads -------------------------------------------------------------

def parse_memory_mib(value):
    """Incus' limits.memory ("2048MiB", "2GiB", "1073741824") in MiB; None if relative or unset."""
    if not value:
        return None
    match = _MEMORY_RE.match(str(value))
    if not match:
        return None
    unit = (match.group(2) or "B").lower()
    return int(round(float(match.group(1)) * _MEMORY_MIB[unit]))


def _parse_cpu(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None  # a pinned set such as "0-3" or unset


def sandbox_from_api(data):
    """A Sandbox from an Incus instance object (recursion=1 or 2 adds state)."""
    config = data.get("expanded_config") or data.get("config") or {}
    state = data.get("state") or {}
    ipv4, ipv6 = [], []
    for ifname, nic in sorted((state.get("network") or {}).items()):
        if ifname == "lo":
            continue
        for addr in nic.get("addresses") or []:
            if addr.get("scope") != "global":
                continue
            (ipv4 if addr.get("family") == "inet" else ipv6).append(addr["address"])
    snapshots = data.get("snapshots") or []
    return Sandbox(
        instance=data["name"],
        status=str(data.get("status", "unknown")).lower(),
        ipv4=ipv4,
        ipv6=ipv6,
        image=config.get(META_IMAGE),
        source=config.get(META_SOURCE),
        cpu=_parse_cpu(config.get("limits.cpu")),
        memory=parse_memory_mib(config.get("limits.memory")),
        created_at=data.get("created_at"),
        description=data.get("description") or "",
        checkpoints=[s["name"].split("/")[-1] if isinstance(s, dict) else s.split("/")[-1] for s in snapshots],
        metadata={k: v for k, v in config.items() if k.startswith("user.")},
    )


# The btrfs quota mode of a pool (simple, full or none), recorded by the incus_host role.
QUOTA_MODE_KEY = "user.pixels.btrfs_quota"


def checkpoint_sizes_known(pool_config):
    """Whether Incus' size of a checkpoint on this pool means anything.

    Simple btrfs quotas charge every extent to the subvolume that wrote it: a checkpoint (a
    read-only snapshot) never writes, so Incus reports the size of its own root node (16 KiB)
    whatever the checkpoint holds. Such a size is unknown, not 16 KiB.
    """
    return (pool_config or {}).get(QUOTA_MODE_KEY) != "simple"


def checkpoint_from_api(data, size_known=True):
    size = data.get("size")
    return Checkpoint(
        label=data["name"].split("/")[-1],
        created_at=data.get("created_at"),
        size=size if size_known and isinstance(size, int) and size >= 0 else None,
        stateful=bool(data.get("stateful")),
    )


def sandboxes_from_listing(items):
    """The px- sandboxes of a /1.0/instances?recursion=2 listing."""
    return [sandbox_from_api(item) for item in items if is_sandbox(item["name"])]


# -- messages -------------------------------------------------------------

def permission_message(path):
    return (f"No permission to use the Incus socket {path}: run as root (become: true) "
            f"or as a member of the incus-admin group.")


def missing_project_message(project, endpoint):
    return (f"project={project!r} does not exist on {endpoint}: create it "
            f"('incus project create {project}') or pick another.")


def connection_message(where, detail, server_cert=None, validate_certs=True):
    """What to tell the user when connecting to Incus at ``where`` failed with ``detail``."""
    lowered = detail.lower()
    if "fingerprint" in lowered or "certificate" in lowered or "ssl" in lowered:
        if server_cert:
            return (f"The Incus server at {where} did not present the certificate in server_cert="
                    f"{server_cert} (pinned by fingerprint): copy the server's certificate "
                    f"(/var/lib/incus/server.crt on the Incus host) there. Detail: {detail}")
        if validate_certs:
            return (f"TLS verification of {where} failed: set server_cert to the server's "
                    f"certificate (/var/lib/incus/server.crt on the Incus host), or "
                    f"validate_certs: false to skip verification. Detail: {detail}")
    if "permission denied" in lowered:
        return permission_message(where)
    if "connection refused" in lowered or "no such file" in lowered:
        return f"Nothing answers at {where}: is the Incus daemon running? Detail: {detail}"
    return f"Cannot connect to Incus at {where}: {detail}"


def check_socket(path):
    """Raise a PixelsError naming the fix unless ``path`` is a unix socket we may use."""
    if not os.path.exists(path):
        raise PixelsError(
            f"The Incus socket {path} does not exist: is Incus installed and running "
            f"(homelab.pixels.incus_host sets it up)? Set socket (or PIXELS_INCUS_SOCKET) "
            f"to another path, or remote for an HTTPS daemon."
        )
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise PixelsError(f"Cannot stat the Incus socket {path}: {exc.strerror}.")
    if not stat.S_ISSOCK(mode):
        raise PixelsError(f"socket={path!r} is not a unix socket: point it at Incus' unix.socket.")
    if not os.access(path, os.R_OK | os.W_OK):
        raise PixelsError(permission_message(path))


# -- read-only client over the local socket -------------------------------

class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP to Incus over its unix socket (the standard library has no such connection)."""

    def __init__(self, path, timeout, blocksize=8192):
        super().__init__("incus", timeout=timeout, blocksize=blocksize)
        self._socket_path = path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._socket_path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class UnixSocketReader:
    """GET requests to a local Incus over its unix socket, one connection per reader."""

    def __init__(self, path, project="default", timeout=60):
        check_socket(path)
        self.path = path
        self.project = project or "default"
        self.timeout = timeout

    def get(self, url, params=None, action="reading Incus"):
        """The ``metadata`` of a sync response; a PixelsError on any failure."""
        query = dict(params or {}, project=self.project)
        connection = UnixHTTPConnection(self.path, self.timeout)
        try:
            connection.request("GET", f"{url}?{urlencode(query)}")
            response = connection.getresponse()
            body = response.read()
        except PermissionError:
            raise PixelsError(permission_message(self.path))
        except socket.timeout:
            raise PixelsError(f"Incus at {self.path} did not answer within {self.timeout} s while {action}.")
        except (OSError, http.client.HTTPException) as exc:
            raise PixelsError(connection_message(self.path, str(exc)))
        finally:
            connection.close()
        try:
            data = json.loads(body)
        except ValueError:
            raise PixelsError(f"{self.path} answered {response.status} with something that is not the "
                              f"Incus API while {action}: is it Incus' unix.socket?")
        if not isinstance(data, dict):
            raise PixelsError(f"{self.path} answered {response.status} with something that is not the Incus API.")
        if data.get("type") == "error" or response.status >= 400:
            error = data.get("error") or response.reason
            raise PixelsError(f"Incus failed {action}: {error}", status=response.status)
        return data.get("metadata")

    def list_sandboxes(self):
        """Every px- sandbox with its addresses and checkpoints (see list_sandboxes)."""
        return list_sandboxes(self.get, self.project, self.path)


def root_pool(item):
    """The storage pool of an instance's (or a snapshot's) root disk; None when it has none."""
    for device in (item.get("expanded_devices") or {}).values():
        if device.get("type") == "disk" and device.get("path") == "/":
            return device.get("pool")
    return None


def list_sandboxes(get, project="default", endpoint="Incus"):
    """Every px- sandbox, with a number of requests that does not grow with theirs.

    ``get(url, params, action=...)`` returns a response's metadata. Incus computes each
    instance's state for recursion=2, disk usage included (one ``btrfs qgroup show`` or
    ``zfs get`` per instance, about 4 ms each), although only a running sandbox has
    addresses. So: one cheap listing (recursion=1); if any sandbox is not stopped, the full
    listing (recursion=2: addresses and checkpoints); if all are stopped, the checkpoints from
    the volume list of their storage pools (one request per pool, not per sandbox).
    """
    items = get("/1.0/instances", {"recursion": 1}, action="listing sandboxes") or []
    items = [item for item in items if is_sandbox(item["name"])]
    if not items:
        if project != "default":
            try:
                get(f"/1.0/projects/{quote(project, safe='')}", action=f"looking up project {project}")
            except PixelsError as exc:
                if exc.details.get("status") == 404:
                    raise PixelsError(missing_project_message(project, endpoint))
                raise
        return []
    pools = {root_pool(item) for item in items}
    if None in pools or any(str(item.get("status", "")).lower() != "stopped" for item in items):
        return sandboxes_from_listing(get("/1.0/instances", {"recursion": 2}, action="listing sandboxes") or [])
    names = {item["name"] for item in items}
    snapshots = {}
    for pool in sorted(pools):
        volumes = get(f"/1.0/storage-pools/{quote(pool, safe='')}/volumes", {"recursion": 1},
                      action=f"listing the checkpoints in storage pool {pool}") or []
        for volume in volumes:
            instance, separator, label = str(volume.get("name", "")).partition("/")
            if separator and instance in names and volume.get("type") in ("container", "virtual-machine"):
                snapshots.setdefault(instance, {})[label] = volume.get("created_at") or ""
    sandboxes = []
    for item in items:
        taken = snapshots.get(item["name"], {})
        labels = sorted(taken, key=lambda label, taken=taken: (taken[label], label))  # creation order, as Incus
        sandboxes.append(sandbox_from_api(dict(item, snapshots=[{"name": label} for label in labels])))
    return sandboxes
