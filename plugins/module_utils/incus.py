# -*- coding: utf-8 -*-
# Copyright: (c) 2026, homelab.pixels contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Incus backend, over pylxd: local unix socket or remote HTTPS."""

from __future__ import annotations

import contextlib
import io
import os
import re
import secrets
import time
import urllib.parse
import warnings

try:
    import pylxd
    import requests
    from pylxd import exceptions as pylxd_errors
    from pylxd.client import get_session_for_url
    HAS_PYLXD = True
    PYLXD_IMPORT_ERROR = None
except ImportError as exc:  # reported by the module with missing_required_lib
    HAS_PYLXD = False
    PYLXD_IMPORT_ERROR = exc

from ansible_collections.homelab.pixels.plugins.module_utils.backend import (
    META_IMAGE,
    META_SOURCE,
    Backend,
)
from ansible_collections.homelab.pixels.plugins.module_utils.errors import PixelsError
# Payload parsing and the socket's checks live in incus_api (no pylxd, for the plugins).
from ansible_collections.homelab.pixels.plugins.module_utils.incus_api import (
    check_socket,
    checkpoint_from_api,
    checkpoint_sizes_known,
    connection_message,
    missing_project_message,
    root_pool,
    sandbox_from_api,
)
from ansible_collections.homelab.pixels.plugins.module_utils.incus_api import list_sandboxes as list_sandboxes_with
# Commands and files inside sandboxes: the logic is pylxd-free (IncusIO), the transport here is pylxd's.
from ansible_collections.homelab.pixels.plugins.module_utils.incus_io import (
    ApiError,
    IncusIO,
    Response,
    error_text,
)
from ansible_collections.homelab.pixels.plugins.module_utils.instance_identity import HostKeys, renew_identity
from ansible_collections.homelab.pixels.plugins.module_utils.names import sandbox_name

POLL_INTERVAL = 0.05
# Incus refuses to start an instance whose name another instance on the same bridge has (DNS).
_DNS_CLASH_RE = re.compile(r'Instance DNS name "([^"]+)" already used on network')
_FINGERPRINT_RE = re.compile(r"^[0-9a-f]{12,64}$")


def _limits_config(cpu, memory):
    config = {}
    if cpu is not None:
        config["limits.cpu"] = str(cpu)
    if memory is not None:
        config["limits.memory"] = f"{memory}MiB"
    return config


class IncusBackend(IncusIO, Backend):
    """Sandboxes on an Incus daemon."""

    def __init__(self, socket=None, remote=None, client_cert=None, client_key=None,
                 server_cert=None, project="default", validate_certs=True, timeout=60):
        if not HAS_PYLXD:
            raise PYLXD_IMPORT_ERROR
        self.project = project or "default"
        self.endpoint = remote or socket
        self.timeout = timeout
        self._pools = {}
        # For the exec websockets, which do not go through pylxd's session.
        self._socket_path = None if remote else socket
        self._tls = dict(client_cert=client_cert, client_key=client_key, server_cert=server_cert,
                         validate_certs=validate_certs)
        self._ssl_context = None
        self._tickets = None  # whether the server sends TLS session tickets (None: not known yet)
        if remote:
            self.client = self._connect_remote(remote, client_cert, client_key, server_cert,
                                               validate_certs, timeout)
        else:
            self.client = self._connect_socket(socket, timeout)
        self._check_project()

    # -- connection -------------------------------------------------------

    def _connect_socket(self, path, timeout):
        check_socket(path)
        return self._client(lambda: pylxd.Client(endpoint=path, timeout=timeout, project=self.project), path)

    def _connect_remote(self, url, client_cert, client_key, server_cert, validate_certs, timeout):
        if not url.startswith("https://"):
            raise PixelsError(f"remote={url!r} must be an https:// URL such as https://incus.lan:8443.")
        if bool(client_cert) != bool(client_key):
            raise PixelsError("client_cert and client_key go together: set both for a remote Incus, or neither.")
        for option, path in (("client_cert", client_cert), ("client_key", client_key), ("server_cert", server_cert)):
            if path and not os.path.isfile(path):
                raise PixelsError(f"{option}={path!r} does not exist or is not a file.")
        if not client_cert:
            raise PixelsError(
                "A remote Incus needs a trusted client certificate: set client_cert and client_key "
                "(add the certificate on the server with 'incus config trust add-certificate')."
            )
        if not validate_certs:
            verify = False
            warnings.filterwarnings("ignore", message="Unverified HTTPS request")
        elif server_cert:
            verify = server_cert  # pinned by fingerprint (pylxd's adapter)
        else:
            verify = True
        url = url.rstrip("/")
        cert = (client_cert, client_key)
        session = get_session_for_url(url, verify=verify, cert=cert)
        # REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE would otherwise replace the pinned
        # certificate with a system bundle (requests' merge of the environment).
        session.trust_env = False
        client = self._client(
            lambda: pylxd.Client(endpoint=url, cert=cert, verify=verify, timeout=timeout,
                                 project=self.project, session=session),
            url, server_cert=server_cert, validate_certs=validate_certs,
        )
        if not client.trusted:
            raise PixelsError(
                f"The Incus server at {url} does not trust client_cert {client_cert}: add it with "
                f"'incus config trust add-certificate {os.path.basename(client_cert)}' on the server."
            )
        return client

    def _client(self, make, where, server_cert=None, validate_certs=True):
        try:
            return make()
        except pylxd_errors.ClientConnectionFailed as exc:
            raise PixelsError(self._connection_message(where, str(exc), server_cert, validate_certs))
        except requests.exceptions.SSLError as exc:
            raise PixelsError(self._connection_message(where, str(exc), server_cert, validate_certs))
        except requests.exceptions.RequestException as exc:
            raise PixelsError(f"Cannot reach Incus at {where}: {exc}")
        except pylxd_errors.LXDAPIException as exc:
            raise PixelsError(f"Incus at {where} refused the connection: {exc}")

    @staticmethod
    def _connection_message(where, detail, server_cert, validate_certs):
        return connection_message(where, detail, server_cert, validate_certs)

    def _check_project(self):
        if self.project == "default":
            return
        with self._errors(f"looking up project {self.project}"):
            try:
                self.client.api.projects[self.project].get()
            except pylxd_errors.NotFound:
                raise PixelsError(missing_project_message(self.project, self.endpoint))

    @contextlib.contextmanager
    def _errors(self, action):
        """Turn API and transport failures into one clear PixelsError."""
        try:
            yield
        except PixelsError:
            raise
        except pylxd_errors.LXDAPIException as exc:
            raise PixelsError(f"Incus failed {action}: {exc}")
        except requests.exceptions.RequestException as exc:
            raise PixelsError(f"Lost the connection to Incus at {self.endpoint} while {action}: {exc}")

    def _wait(self, response):
        """Wait for the operation a response started; raise its error."""
        body = response.json()
        if body.get("type") == "async":
            operation = self.client.operations.wait_for_operation(body["operation"])
            if getattr(operation, "status", "Success") != "Success":
                raise PixelsError(getattr(operation, "err", None) or f"operation {operation.id} failed")
            return operation
        return None

    def _api(self, instance):
        return self.client.api.instances[instance]

    # -- sandboxes --------------------------------------------------------

    def _instance_data(self, instance):
        try:
            return self._api(instance).get(params={"recursion": 1}).json()["metadata"]
        except pylxd_errors.NotFound:
            return None

    def get_sandbox(self, instance):
        with self._errors(f"reading {instance}"):
            data = self._instance_data(instance)
        return sandbox_from_api(data) if data else None

    def get(self, url, params=None, action="reading Incus"):
        """The metadata of ``GET url`` (such as /1.0/instances) in this project."""
        node = self.client.api
        for segment in url.split("/")[2:]:  # after /1.0
            node = node[segment]
        with self._errors(action):
            try:
                return node.get(params=dict(params or {})).json()["metadata"]
            except pylxd_errors.NotFound as exc:
                raise PixelsError(f"Incus failed {action}: {exc}", status=404)

    def list_sandboxes(self):
        # incus_api: a fixed number of requests, without Incus' per-instance state when all are stopped
        return list_sandboxes_with(self.get, self.project, self.endpoint)

    def _image_source(self, image, image_server):
        with self._errors(f"looking up image {image}"):
            try:
                self.client.api.images.aliases[image].get()
                return {"type": "image", "alias": image}
            except pylxd_errors.NotFound:
                pass
            if _FINGERPRINT_RE.match(image):
                try:
                    self.client.api.images[image].get()
                    return {"type": "image", "fingerprint": image}
                except pylxd_errors.NotFound:
                    pass
        if not image_server:
            raise PixelsError(
                f"image={image!r} is neither a local image alias nor a fingerprint, and no "
                f"image_server is set to pull it from: import it, or set image_server."
            )
        return {"type": "image", "mode": "pull", "server": image_server,
                "protocol": "simplestreams", "alias": image}

    def create_sandbox(self, instance, image, image_server=None, cpu=None, memory=None,
                       pool=None, description="", start=True, metadata=None):
        body = {
            "name": instance,
            "type": "container",
            "description": description or "",
            "source": self._image_source(image, image_server),
            "config": dict(_limits_config(cpu, memory), **{META_IMAGE: image}, **(metadata or {})),
        }
        if pool:
            body["devices"] = {"root": {"type": "disk", "path": "/", "pool": pool}}
        try:
            self._create(instance, body, start)
        except PixelsError as exc:
            if body["source"].get("mode") != "pull":
                raise
            raise PixelsError(
                f"Could not create {instance} from image {image!r} of {image_server}: {exc.message} "
                f"Check image and image_server, or build a local image (homelab.pixels.image role) "
                f"and give its alias as image."
            )

    def clone_sandbox(self, instance, source, label=None, cpu=None, memory=None,
                      description="", start=True, metadata=None):
        temporary = None
        if label is None:
            # A snapshot freezes the running source for a consistent copy.
            temporary = "px-clone-" + secrets.token_hex(4)
            self.create_checkpoint(source, temporary)
        try:
            snapshot = self._snapshot_data(source, label or temporary)
            config = {k: v for k, v in (snapshot.get("config") or {}).items()
                      if not k.startswith("volatile.")}
            config.update(_limits_config(cpu, memory))
            config[META_SOURCE] = sandbox_name(source) + (":" + label if label else "")
            config.update(metadata or {})
            body = {
                "name": instance,
                "type": "container",
                "description": description or "",
                "source": {"type": "copy", "source": f"{source}/{label or temporary}"},
                "config": config,
                "devices": snapshot.get("devices") or {},
                "profiles": snapshot.get("profiles") or ["default"],
            }
            host_keys = HostKeys(f"root@{instance}")  # made while Incus copies
            self._create(instance, body, start, prepare=lambda: renew_identity(self, instance, host_keys))
        finally:
            if temporary:
                self.delete_checkpoint(source, temporary)

    def _snapshot_data(self, instance, label):
        with self._errors(f"reading checkpoint {label} of {instance}"):
            try:
                self._api(instance).get()
            except pylxd_errors.NotFound:
                raise PixelsError(f"source sandbox {sandbox_name(instance)!r} ({instance}) does not exist.")
            try:
                return self._api(instance).snapshots[label].get().json()["metadata"]
            except pylxd_errors.NotFound:
                labels = [c.label for c in self.list_checkpoints(instance)]
                raise PixelsError(
                    f"{sandbox_name(instance)!r} has no checkpoint {label!r}; its checkpoints are: "
                    f"{', '.join(labels) or 'none'}."
                )

    def _create(self, instance, body, start, prepare=None):
        """POST the instance, run ``prepare()`` on it while it is stopped, start it; on any
        later failure remove it again."""
        with self._errors(f"creating {instance}"):
            try:
                response = self.client.api.instances.post(json=body)
            except pylxd_errors.Conflict:
                raise PixelsError(f"{instance} already exists.")
            try:
                self._wait(response)
                if prepare is not None:
                    prepare()
            except Exception:
                self._discard(instance)
                raise
        if start:
            try:
                self.start(instance)
            except Exception:
                self._discard(instance)
                raise

    def _discard(self, instance):
        """Best-effort removal of an instance this run created."""
        with contextlib.suppress(Exception):
            self.delete(instance)

    def _set_state(self, instance, action, timeout=30, force=False):
        with self._errors(f"{action.rstrip('e')}ing {instance}"):
            response = self._api(instance).state.put(
                json={"action": action, "timeout": timeout, "force": force})
            self._wait(response)

    def start(self, instance):
        try:
            self._set_state(instance, "start")
        except PixelsError as exc:
            clash = _DNS_CLASH_RE.search(exc.message)
            if not clash:
                raise
            raise PixelsError(self._dns_clash_message(instance, clash.group(1))) from exc

    def _dns_clash_message(self, instance, dns_name):
        """Who else uses ``dns_name`` on the bridges of ``instance``: Incus only says that someone does."""
        with self._errors(f"reading {instance}"):
            data = self._instance_data(instance) or {}
        networks = {device.get("network") or device.get("parent")
                    for device in (data.get("expanded_devices") or {}).values() if device.get("type") == "nic"}
        networks.discard(None)
        where = " or ".join(sorted(networks)) or "its network"
        owners = set()
        for network in sorted(networks):
            try:
                used_by = self.client.api.networks[network].get().json()["metadata"].get("used_by") or []
            except (pylxd_errors.LXDAPIException, requests.exceptions.RequestException):
                continue  # the message goes out without the owner rather than not at all
            for url in used_by:
                parsed = urllib.parse.urlsplit(url)
                if parsed.path == f"/1.0/instances/{dns_name}":
                    project = urllib.parse.parse_qs(parsed.query).get("project", ["default"])[0]
                    if project != self.project:
                        owners.add(project)
        owners = sorted(owners)
        who = (f"by an instance of project {', '.join(repr(owner) for owner in owners)}" if owners
               else "by an instance of another project")
        return (f"Cannot start {instance}: its name {dns_name!r} is already used on network {where} {who} "
                f"(Incus gives each instance on a bridge its DNS name). Choose another sandbox name, remove that "
                f"instance, or give project {self.project!r} a bridge of its own: `incus network create BRIDGE` and "
                f"a profile of the project whose eth0 NIC uses it (README: 'A project of its own').")

    def stop(self, instance, timeout=30):
        try:
            self._set_state(instance, "stop", timeout=timeout)
        except PixelsError:
            self._set_state(instance, "stop", force=True)

    def restart(self, instance, timeout=30):
        try:
            self._set_state(instance, "restart", timeout=timeout)
        except PixelsError:
            self._set_state(instance, "restart", force=True)

    def delete(self, instance):
        with self._errors(f"deleting {instance}"):
            try:
                status = self._api(instance).state.get().json()["metadata"]["status"]
            except pylxd_errors.NotFound:
                return
            if status.lower() != "stopped":
                self._set_state(instance, "stop", force=True)
            self._wait(self._api(instance).delete())

    def set_limits(self, instance, cpu=None, memory=None):
        config = _limits_config(cpu, memory)
        if config:
            with self._errors(f"changing the limits of {instance}"):
                self._wait(self._api(instance).patch(json={"config": config}))

    def host_limits(self):
        with self._errors("reading the host's resources"):
            resources = self.client.api.resources.get().json()["metadata"]
        return int(resources["cpu"]["total"]), int(resources["memory"]["total"]) // 1048576

    def wait_for_address(self, instance, timeout):
        deadline = time.monotonic() + timeout
        while True:
            with self._errors(f"waiting for {instance}"):
                try:
                    state = self._api(instance).state.get().json()["metadata"]
                except pylxd_errors.NotFound:
                    raise PixelsError(f"{instance} disappeared while waiting for its IPv4 address.")
            sandbox = sandbox_from_api({"name": instance, "status": state.get("status"), "state": state})
            if sandbox.ipv4:
                return sandbox
            if sandbox.status != "running":
                raise PixelsError(f"{instance} is {sandbox.status}, not running: it cannot get an address.")
            if time.monotonic() >= deadline:
                raise PixelsError(
                    f"{instance} got no IPv4 address within {timeout} s: check that its image "
                    f"runs a DHCP client and its network has DHCP (incus info {instance} --show-log), "
                    f"or raise wait_timeout."
                )
            time.sleep(POLL_INTERVAL)

    def run(self, instance, argv, timeout=None):
        body = {"command": list(argv), "wait-for-websocket": False, "interactive": False,
                "record-output": False, "environment": {}}
        with self._errors(f"running {argv[0]} in {instance}"):
            operation = self._wait(self._api(instance)["exec"].post(json=body))
        return int((operation.metadata or {}).get("return", -1))

    # -- checkpoints ------------------------------------------------------

    def list_checkpoints(self, instance):
        with self._errors(f"listing the checkpoints of {instance}"):
            try:
                items = self._api(instance).snapshots.get(params={"recursion": 1}).json()["metadata"]
            except pylxd_errors.NotFound:
                raise PixelsError(f"sandbox {sandbox_name(instance)!r} ({instance}) does not exist.")
            pool = root_pool(items[0]) if items else None
            known = checkpoint_sizes_known(self._pool_config(pool)) if pool else True
        checkpoints = [checkpoint_from_api(item, known) for item in items]
        return sorted(checkpoints, key=lambda c: c.created_at or "")

    def _pool_config(self, pool):
        """A storage pool's configuration, read once per backend ({} for a pool that does not exist)."""
        if pool not in self._pools:
            try:
                self._pools[pool] = self.client.api.storage_pools[pool].get().json()["metadata"].get("config") or {}
            except pylxd_errors.NotFound:
                self._pools[pool] = {}
        return self._pools[pool]

    def create_checkpoint(self, instance, label):
        with self._errors(f"checkpointing {instance} as {label}"):
            self._wait(self._api(instance).snapshots.post(json={"name": label, "stateful": False}))

    def delete_checkpoint(self, instance, label):
        with self._errors(f"deleting checkpoint {label} of {instance}"):
            self._wait(self._api(instance).snapshots[label].delete())

    def restore_checkpoint(self, instance, label):
        was_running = self.get_sandbox(instance).running
        if was_running:
            self.stop(instance)
        with self._errors(f"restoring {instance} to {label}"):
            self._wait(self._api(instance).put(json={"restore": label}))
        if was_running:
            self.start(instance)

    def close(self):
        with contextlib.suppress(Exception):
            self.client.api.session.close()

    # -- inside the sandbox (IncusIO) ---------------------------------------

    def _request(self, method, path, params=None, body=None, data=None, headers=None, stream=False,
                 timeout=None, action="talking to Incus"):
        session = self.client.api.session
        base = self.client.api._api_endpoint[:-len("/1.0")]  # pylint: disable=protected-access
        try:
            response = session.request(method, base + path, params=dict(params or {}, project=self.project),
                                       json=body, data=data, headers=headers, stream=stream,
                                       timeout=timeout or self.timeout)
        except requests.exceptions.SSLError as exc:
            raise PixelsError(self._connection_message(self.endpoint, str(exc), self._tls["server_cert"],
                                                       self._tls["validate_certs"]))
        except requests.exceptions.Timeout:
            raise PixelsError(f"Incus at {self.endpoint} did not answer within {timeout or self.timeout} s while {action}.")
        except requests.exceptions.RequestException as exc:
            raise PixelsError(f"Lost the connection to Incus at {self.endpoint} while {action}: {exc}")
        headers = {name.lower(): value for name, value in response.headers.items()}
        if response.status_code >= 400:
            raise ApiError(response.status_code, error_text(response.content, f"{response.status_code} {response.reason}"))
        if stream:
            return Response(response.status_code, headers,
                            lambda size=None: response.raw.read(size, decode_content=True),
                            response.close)
        content = response.content
        if headers.get("content-type", "").startswith("application/json"):
            try:
                data = response.json()
            except ValueError:
                data = None
            if isinstance(data, dict) and data.get("type") == "error":  # an operation's wait
                raise ApiError(int(data.get("error_code") or 500), data.get("error") or "unknown error")
        return Response(response.status_code, headers, io.BytesIO(content).read, response.close)
