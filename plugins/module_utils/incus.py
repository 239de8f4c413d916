# -*- coding: utf-8 -*-
# Copyright: (c) 2026, homelab.pixels contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Incus backend, over pylxd: local unix socket or remote HTTPS."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import ssl
import stat
import tempfile
import threading
import time
import warnings
from urllib.parse import quote, urlencode, urlsplit

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
    STREAM_CHUNK,
    Backend,
    ExecResult,
    ExecSession,
)
from ansible_collections.homelab.pixels.plugins.module_utils.errors import PixelsError, SandboxUnavailable
# Payload parsing and the socket's checks live in incus_api (no pylxd, for the plugins);
# imported here under their old names.
from ansible_collections.homelab.pixels.plugins.module_utils.incus_api import (  # noqa: F401 pylint: disable=unused-import
    check_socket,
    checkpoint_from_api,
    connection_message,
    missing_project_message,
    parse_memory_mib,
    sandbox_from_api,
    sandboxes_from_listing,
)
from ansible_collections.homelab.pixels.plugins.module_utils.names import sandbox_name

POLL_INTERVAL = 0.05
# Exit codes that Incus turns into an error of the exec operation.
_EXIT_ERRORS = {"Command not found": 127, "Command not executable": 126}
_FINGERPRINT_RE = re.compile(r"^[0-9a-f]{12,64}$")


def _limits_config(cpu, memory):
    config = {}
    if cpu is not None:
        config["limits.cpu"] = str(cpu)
    if memory is not None:
        config["limits.memory"] = f"{memory}MiB"
    return config


class IncusBackend(Backend):
    """Sandboxes on an Incus daemon."""

    def __init__(self, socket=None, remote=None, client_cert=None, client_key=None,
                 server_cert=None, project="default", validate_certs=True, timeout=60):
        if not HAS_PYLXD:
            raise PYLXD_IMPORT_ERROR
        self.project = project or "default"
        self.endpoint = remote or socket
        self.timeout = timeout
        # For the exec websockets, which do not go through pylxd's session.
        self._socket_path = None if remote else socket
        self._tls = dict(client_cert=client_cert, client_key=client_key, server_cert=server_cert,
                         validate_certs=validate_certs)
        self._ssl_context = None
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

    def list_sandboxes(self):
        with self._errors("listing sandboxes"):
            items = self.client.api.instances.get(params={"recursion": 2}).json()["metadata"]
        return sandboxes_from_listing(items)

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
                       pool=None, description="", start=True):
        body = {
            "name": instance,
            "type": "container",
            "description": description or "",
            "source": self._image_source(image, image_server),
            "config": dict(_limits_config(cpu, memory), **{META_IMAGE: image}),
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
                      description="", start=True):
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
            body = {
                "name": instance,
                "type": "container",
                "description": description or "",
                "source": {"type": "copy", "source": f"{source}/{label or temporary}"},
                "config": config,
                "devices": snapshot.get("devices") or {},
                "profiles": snapshot.get("profiles") or ["default"],
            }
            self._create(instance, body, start)
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

    def _create(self, instance, body, start):
        """POST the instance; on any later failure remove it again."""
        with self._errors(f"creating {instance}"):
            try:
                response = self.client.api.instances.post(json=body)
            except pylxd_errors.Conflict:
                raise PixelsError(f"{instance} already exists.")
            try:
                self._wait(response)
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
        self._set_state(instance, "start")

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
        checkpoints = [checkpoint_from_api(item) for item in items]
        return sorted(checkpoints, key=lambda c: c.created_at or "")

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

    # -- inside the sandbox -------------------------------------------------

    def _unavailable(self, instance):
        """SandboxUnavailable when the instance is missing or not running, else None."""
        name = sandbox_name(instance)
        where = f"project {self.project} at {self.endpoint}"
        try:
            status = self._api(instance).state.get().json()["metadata"]["status"].lower()
        except pylxd_errors.NotFound:
            return SandboxUnavailable(
                f"Sandbox {name!r} does not exist: there is no Incus instance {instance} in {where}. "
                f"Create it (homelab.pixels.pixels_container with name: {name}), or point "
                f"pixels_instance and pixels_incus_project at an existing one.", "missing")
        if status == "running":
            return None
        return SandboxUnavailable(
            f"Sandbox {name!r} ({instance} in {where}) is {status}, not running: start it first "
            f"(homelab.pixels.pixels_container with name: {name} and state: started).", status)

    @contextlib.contextmanager
    def _inside(self, instance, action):
        """_errors, and SandboxUnavailable rather than an API error when that is the cause."""
        with self._errors(action):
            try:
                yield
            except pylxd_errors.LXDAPIException:
                problem = self._unavailable(instance)
                if problem:
                    raise problem
                raise

    def exec_start(self, instance, argv, env=None, user=None, group=None, cwd=None):
        body = {"command": [str(arg) for arg in argv], "environment": dict(env or {}),
                "interactive": False, "wait-for-websocket": True, "record-output": False}
        if user is not None:
            body["user"] = int(user)
        if group is not None:
            body["group"] = int(group)
        if cwd:
            body["cwd"] = cwd
        with self._inside(instance, f"starting {argv[0]} in {instance}"):
            data = self._api(instance)["exec"].post(json=body).json()
        operation = data["operation"].split("?", 1)[0].rsplit("/", 1)[-1]
        fds = data["metadata"]["metadata"]["fds"]
        streams = contextlib.ExitStack()
        try:
            # The command starts once stdin, stdout and stderr are connected; the control
            # channel (signals, window size) is optional for non-interactive commands.
            connections = [streams.enter_context(self._websocket(operation, fds[fd])) for fd in ("0", "1", "2")]
        except BaseException:
            streams.close()
            raise
        return IncusExec(self, instance, operation, connections, streams)

    def _websocket(self, operation, secret):
        """A websocket of an exec operation, with the same TLS trust as the REST session."""
        from websockets.sync.client import connect, unix_connect  # only when a command runs
        from websockets.exceptions import InvalidHandshake, WebSocketException

        path = f"/1.0/operations/{quote(operation, safe='')}/websocket?" + urlencode(
            {"secret": secret, "project": self.project})
        options = dict(compression=None, max_size=None, max_queue=None, ping_interval=None,
                       open_timeout=self.timeout, close_timeout=5)
        try:
            if self._socket_path:
                return unix_connect(self._socket_path, "ws://incus" + path, **options)
            return connect("wss://" + urlsplit(self.endpoint).netloc + path, ssl=self._tls_context(),
                           proxy=None, **options)
        except ssl.SSLError as exc:
            raise PixelsError(self._connection_message(self.endpoint, f"SSL: {exc}", self._tls["server_cert"],
                                                       self._tls["validate_certs"]))
        except (OSError, TimeoutError, InvalidHandshake, WebSocketException) as exc:
            raise PixelsError(f"Cannot open the command's streams at {self.endpoint}: {exc}")

    def _tls_context(self):
        if self._ssl_context is None:
            self._ssl_context = tls_context(**self._tls)
        return self._ssl_context

    def exec_return(self, instance, operation):
        """The exit code of an exec operation, once it has ended."""
        while True:
            with self._errors(f"waiting for a command in {instance}"):
                try:
                    data = self.client.api.operations[operation].wait.get(
                        params={"timeout": 30}, timeout=self.timeout + 30).json()["metadata"]
                except pylxd_errors.LXDAPIException as exc:
                    # Incus reports these exit codes as errors, for a shell's as for its own.
                    if str(exc) in _EXIT_ERRORS:
                        return _EXIT_ERRORS[str(exc)]
                    raise
            if str(data.get("status", "")).lower() in ("running", "pending"):
                continue
            metadata = data.get("metadata") or {}
            if "return" in metadata:
                return int(metadata["return"])
            raise PixelsError(f"The command in {instance} failed: {data.get('err') or data.get('status')}")

    def put_file(self, instance, local_path, remote_path, uid=0, gid=0, mode=None):
        if mode is None:
            mode = stat.S_IMODE(os.stat(local_path).st_mode)
        headers = {"Content-Type": "application/octet-stream", "X-Incus-type": "file",
                   "X-Incus-write": "overwrite", "X-Incus-uid": str(int(uid)),
                   "X-Incus-gid": str(int(gid)), "X-Incus-mode": f"{mode:04o}"}
        with open(local_path, "rb") as handle:  # requests streams a file object
            with self._inside(instance, f"copying {local_path} to {remote_path} in {instance}"):
                self._api(instance).files.post(params={"path": remote_path}, data=handle, headers=headers)

    def _file_response(self, instance, remote_path):
        """A streamed GET of a regular file, following symlinks; None when it does not exist."""
        path = remote_path
        for _hop in range(40):
            with self._inside(instance, f"reading {path} in {instance}"):
                try:
                    response = self._api(instance).files.get(params={"path": path}, stream=True)
                except pylxd_errors.NotFound:
                    problem = self._unavailable(instance)
                    if problem:
                        raise problem
                    return None
            kind = response.headers.get("X-Incus-type", "file")
            if kind == "file":
                return response
            target = response.content.decode("utf-8", "replace").strip() if kind == "symlink" else None
            response.close()
            if not target:
                raise PixelsError(f"{remote_path} in {instance} is a {kind}, not a file.")
            path = os.path.normpath(os.path.join(os.path.dirname(path), target))
        raise PixelsError(f"{remote_path} in {instance}: too many levels of symbolic links.")

    def fetch_file(self, instance, remote_path, local_path):
        response = self._file_response(instance, remote_path)
        if response is None:
            raise PixelsError(f"{remote_path} does not exist in {instance}.", missing=True)
        mode = int(response.headers.get("X-Incus-mode", "0600"), 8) & 0o777
        directory = os.path.dirname(os.path.abspath(local_path))
        handle = tempfile.NamedTemporaryFile(dir=directory, prefix=".pixels-fetch-", delete=False)
        try:
            with response, handle:
                with self._errors(f"reading {remote_path} in {instance}"):
                    for chunk in response.iter_content(STREAM_CHUNK):
                        handle.write(chunk)
            os.chmod(handle.name, mode)
            os.replace(handle.name, local_path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(handle.name)
            raise
        return mode

    def read_file(self, instance, remote_path, limit=1 << 20):
        response = self._file_response(instance, remote_path)
        if response is None:
            return None
        with response:
            with self._errors(f"reading {remote_path} in {instance}"):
                data = response.raw.read(limit + 1, decode_content=True)
        if len(data) > limit:
            raise PixelsError(f"{remote_path} in {instance} is larger than {limit} bytes.")
        return data


class IncusExec(ExecSession):
    """A command started by IncusBackend.exec_start, streaming over the operation's websockets.

    Incus sends output as binary messages and an empty text message at the end of a stream;
    stdin ends the same way. Two threads collect stdout and stderr as they arrive.
    """

    def __init__(self, backend, instance, operation, connections, streams):
        from websockets.exceptions import ConnectionClosed
        self._closed_error = ConnectionClosed
        self._backend = backend
        self._instance = instance
        self._operation = operation
        self._stdin = connections[0]
        self._streams = streams
        self._chunks = ([], [])
        self._ended = 0
        self._error = None
        self._stdin_open = True
        self._changed = threading.Condition()
        self._readers = [threading.Thread(target=self._read, args=(index, connection), daemon=True)
                         for index, connection in enumerate(connections[1:])]
        for reader in self._readers:
            reader.start()

    def _read(self, index, connection):
        try:
            while True:
                message = connection.recv()
                if isinstance(message, str):
                    if not message:
                        break  # end of stream
                    message = message.encode("utf-8")
                with self._changed:
                    self._chunks[index].append(message)
                    self._changed.notify_all()
        except self._closed_error:
            pass  # Incus drops the connection after the end-of-stream message
        except Exception as exc:  # pylint: disable=broad-except
            self._error = exc
        finally:
            with self._changed:
                self._ended += 1
                self._changed.notify_all()

    def write(self, data):
        if not self._stdin_open:
            return False
        view = memoryview(data)
        try:
            for start in range(0, len(view), STREAM_CHUNK):
                self._stdin.send(view[start:start + STREAM_CHUNK])
        except (self._closed_error, OSError):
            self._stdin_open = False  # the command ended or closed its stdin
        return self._stdin_open

    def close_stdin(self):
        if self._stdin_open:
            self._stdin_open = False
            with contextlib.suppress(self._closed_error, OSError):
                self._stdin.send("")

    def output(self):
        with self._changed:
            return b"".join(self._chunks[0]), b"".join(self._chunks[1])

    def wait_output(self, timeout):
        with self._changed:
            seen = (len(self._chunks[0]), len(self._chunks[1]), self._ended)
            return self._changed.wait_for(
                lambda: (len(self._chunks[0]), len(self._chunks[1]), self._ended) != seen or self._ended == 2,
                timeout)

    def wait(self):
        self.close_stdin()
        for reader in self._readers:
            reader.join()
        if self._error is not None:
            raise PixelsError(f"Lost the output of a command in {self._instance}: {self._error}")
        rc = self._backend.exec_return(self._instance, self._operation)
        stdout, stderr = self.output()
        return ExecResult(rc, stdout, stderr)

    def close(self):
        with contextlib.suppress(Exception):
            self._streams.close()


def _first_pem_certificate(path):
    with open(path, "r", encoding="ascii", errors="replace") as handle:
        text = handle.read()
    match = re.search(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", text, re.DOTALL)
    if not match:
        raise PixelsError(f"server_cert={path!r} holds no PEM certificate: copy the server's "
                          f"/var/lib/incus/server.crt there.")
    return ssl.PEM_cert_to_DER_cert(match.group(0))


def tls_context(client_cert=None, client_key=None, server_cert=None, validate_certs=True):
    """An SSLContext that trusts the server exactly as the REST session does.

    ``server_cert`` is pinned by the SHA-256 fingerprint of the certificate (pylxd's adapter
    does the same for REST), checked during the handshake, before anything is sent; without
    it the server needs a certificate that requests' CA bundle trusts, with a matching host
    name. The environment (REQUESTS_CA_BUNDLE, SSL_CERT_FILE) plays no part in either.
    Only ``validate_certs=False`` skips verification.
    """
    if not validate_certs or server_cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context = ssl.create_default_context(cafile=requests.certs.where())
    if validate_certs and server_cert:
        expected = hashlib.sha256(_first_pem_certificate(server_cert)).hexdigest()

        class PinnedSSLSocket(ssl.SSLSocket):
            def do_handshake(self, block=False):
                super().do_handshake(block)
                presented = self.getpeercert(binary_form=True) or b""
                if hashlib.sha256(presented).hexdigest() != expected:
                    raise ssl.SSLCertVerificationError(
                        f"certificate fingerprint mismatch: expected {expected}, "
                        f"got {hashlib.sha256(presented).hexdigest()}")

        context.sslsocket_class = PinnedSSLSocket
    if client_cert:
        context.load_cert_chain(client_cert, client_key)
    return context
