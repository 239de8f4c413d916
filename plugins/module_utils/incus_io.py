# -*- coding: utf-8 -*-
# Copyright: (c) 2026, homelab.pixels contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Commands and files inside sandboxes through the Incus API, without pylxd.

``IncusIO`` holds the logic: a command's stdin, stdout and stderr over the exec operation's
websockets (the ``websockets`` library; Incus' TLS trust as the REST session has it), files
through the file API, streamed. It needs one transport method, ``_request``:
``incus.IncusBackend`` provides it over pylxd's session (remote HTTPS and everything the
modules do), ``IncusSocketIO`` over the local unix socket with the standard library. The
connection plugin uses the latter for a local Incus: a task then never imports pylxd,
requests or urllib3, which costs more than the task's own requests.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.client
import io
import json
import logging
import os
import re
import select
import socket
import ssl
import stat
import threading
import time
from urllib.parse import quote, urlencode, urlsplit

from ansible_collections.homelab.pixels.plugins.module_utils.backend import (
    MAX_OUTPUT,
    STREAM_CHUNK,
    ExecResult,
    ExecSession,
    SandboxIO,
    output_limit_message,
)
from ansible_collections.homelab.pixels.plugins.module_utils.errors import PixelsError, SandboxUnavailable
from ansible_collections.homelab.pixels.plugins.module_utils.incus_api import (
    UnixHTTPConnection,
    check_socket,
    connection_message,
    missing_project_message,
    permission_message,
)
from ansible_collections.homelab.pixels.plugins.module_utils.names import sandbox_name
from ansible_collections.homelab.pixels.plugins.module_utils.transfer import local_file

# Messages a stream's websocket holds before it stops reading: a reader slower than the
# sandbox (a fetched file written to a slow disk) makes the command wait, rather than the
# controller buffer all of its output, and the command's operation cannot end (and be
# forgotten by Incus) long before its output has been read.
WEBSOCKET_QUEUE = 16

# Exit codes that Incus turns into an error of the exec operation.
EXIT_ERRORS = {"Command not found": 127, "Command not executable": 126}

# The websockets library logs races between its reader thread and a closing socket as
# "unexpected internal error" with a traceback; Python would print that on stderr, which Ansible
# reports as a worker writing to stderr. Failures that matter reach us as exceptions.
_WEBSOCKETS_LOG = logging.getLogger("homelab.pixels.incus.websockets")
_WEBSOCKETS_LOG.addHandler(logging.NullHandler())
_WEBSOCKETS_LOG.propagate = False


class ApiError(PixelsError):
    """An error answer of the Incus API (``status`` is its HTTP status)."""

    def __init__(self, status, message):
        super().__init__(message, status=status)
        self.status = status


class Response:
    """What IncusIO needs of an answer: headers, the JSON body or the raw bytes, streamed."""

    def __init__(self, status, headers, read, close):
        self.status = status
        self.headers = headers  # lower-case names
        self._read = read
        self.close = close

    def read(self, size=None):
        """At most ``size`` bytes of the body; all of the rest without ``size``."""
        return self._read(None if size is None or size < 0 else size)

    def json(self):
        return json.loads(self.read())

    def chunks(self, size=STREAM_CHUNK):
        while True:
            chunk = self.read(size)
            if not chunk:
                return
            yield chunk

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def error_text(body, fallback):
    """The ``error`` of an Incus error body, or ``fallback``."""
    try:
        data = json.loads(body)
    except (TypeError, ValueError):
        return fallback
    return (data.get("error") if isinstance(data, dict) else None) or fallback


class IncusIO(SandboxIO):
    """SandboxIO over the Incus API; subclasses provide ``_request``.

    Needs the attributes ``project``, ``endpoint`` (socket path or URL), ``timeout``,
    ``_socket_path`` (None for a remote), ``_tls`` (tls_context's arguments),
    ``_ssl_context`` (None until the first websocket) and ``_tickets`` (None).
    """

    def _request(self, method, path, params=None, body=None, data=None, headers=None, stream=False,
                 timeout=None, action="talking to Incus"):
        """``method path`` in this project: a Response for a 2xx answer (its body unread when
        ``stream``); ApiError for an error answer, PixelsError when Incus cannot be reached."""
        raise NotImplementedError

    def _instance_path(self, instance, *parts):
        return "/1.0/instances/" + "/".join(quote(part, safe="") for part in (instance, *parts))

    def _unavailable(self, instance):
        """SandboxUnavailable when the instance is missing or not running, else None."""
        name = sandbox_name(instance)
        where = f"project {self.project} at {self.endpoint}"
        try:
            with self._request("GET", self._instance_path(instance, "state"), action=f"reading {instance}") as answer:
                status = str(answer.json()["metadata"]["status"]).lower()
        except ApiError as exc:
            if exc.status != 404:
                raise
            if self.project != "default":
                try:
                    self._request("GET", "/1.0/projects/" + quote(self.project, safe=""),
                                  action=f"looking up project {self.project}").close()
                except ApiError as project_error:
                    if project_error.status == 404:
                        raise PixelsError(missing_project_message(self.project, self.endpoint))
                    raise
            return SandboxUnavailable(
                f"Sandbox {name!r} does not exist: there is no Incus instance {instance} in {where}. "
                f"Create it (homelab.pixels.pixels_container with name: {name}), or point "
                f"pixels_instance and pixels_incus_project at an existing one.", "missing")
        if status == "running":
            return None
        return SandboxUnavailable(
            f"Sandbox {name!r} ({instance} in {where}) is {status}, not running: start it first "
            f"(homelab.pixels.pixels_container with name: {name} and state: started).", status)

    def _in_instance(self, instance, method, path, action, **kwargs):
        """A request about ``instance``; SandboxUnavailable when that is why it failed."""
        try:
            return self._request(method, path, action=action, **kwargs)
        except ApiError as exc:
            problem = self._unavailable(instance)
            if problem:
                raise problem
            raise PixelsError(f"Incus failed {action}: {exc.message}", status=exc.status)

    # -- commands -----------------------------------------------------------------

    def exec_start(self, instance, argv, env=None, user=None, group=None, cwd=None, stdout_sink=None):
        body = {"command": [str(arg) for arg in argv], "environment": dict(env or {}),
                "interactive": False, "wait-for-websocket": True, "record-output": False}
        if user is not None:
            body["user"] = int(user)
        if group is not None:
            body["group"] = int(group)
        if cwd:
            body["cwd"] = cwd
        with self._in_instance(instance, "POST", self._instance_path(instance, "exec"),
                               f"starting {argv[0]} in {instance}", body=body) as answer:
            data = answer.json()
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
        return IncusExec(self, instance, operation, connections, streams, stdout_sink)

    def _websocket(self, operation, secret):
        """A websocket of an exec operation, with the same TLS trust as the REST session."""
        try:  # imported only when a command runs
            from websockets.exceptions import InvalidHandshake, WebSocketException
            from websockets.sync.client import connect, unix_connect
        except ImportError as exc:
            raise PixelsError(f"Running commands in sandboxes needs the websockets package (12 or later) in the "
                              f"Python that runs Ansible ({exc}): pip install -r requirements.txt there.")

        path = f"/1.0/operations/{quote(operation, safe='')}/websocket?" + urlencode(
            {"secret": secret, "project": self.project})
        options = dict(compression=None, max_size=None, max_queue=WEBSOCKET_QUEUE, ping_interval=None,
                       open_timeout=self.timeout, close_timeout=1, logger=_WEBSOCKETS_LOG)
        try:
            if self._socket_path:
                return unix_connect(self._socket_path, "ws://incus" + path, **options)
            # TLS is set up here, not by websockets (see _open_tls); the URI is ws:// for that.
            tls_socket = self._open_tls()
            try:
                return connect("ws://" + urlsplit(self.endpoint).netloc + path, sock=tls_socket,
                               create_connection=unblocking_connection(), **options)
            except BaseException:
                tls_socket.close()
                raise
        except ssl.SSLError as exc:
            raise PixelsError(connection_message(self.endpoint, f"SSL: {exc}", self._tls["server_cert"],
                                                 self._tls["validate_certs"]))
        except PermissionError:
            raise PixelsError(permission_message(self.endpoint))
        except (OSError, InvalidHandshake, WebSocketException) as exc:
            raise PixelsError(f"Cannot open the command's streams at {self.endpoint}: {exc}")

    def _open_tls(self):
        """A TLS connection to the remote whose post-handshake session tickets are already read.

        Incus (Go, TLS 1.3 only) sends a session ticket just after the handshake. When
        websockets' reading thread takes it while the main thread writes the upgrade request
        on the same SSL object, OpenSSL can lose the server's answer and the handshake waits
        forever (seen under load, about one websocket in 600). Reading the ticket here, before
        a second thread shares the socket, closes that window.
        """
        url = urlsplit(self.endpoint)
        # The REST session's port: the URL's, else HTTPS' own.
        raw = socket.create_connection((url.hostname, url.port or 443), timeout=self.timeout)
        try:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
            tls_socket = self._tls_context().wrap_socket(raw, server_hostname=url.hostname)
        except BaseException:
            raw.close()
            raise
        try:
            if self._tickets is not False:
                self._tickets = read_session_tickets(tls_socket, TICKET_WAIT)
            tls_socket.settimeout(None)  # websockets expects a blocking socket
        except BaseException:
            tls_socket.close()
            raise
        return tls_socket

    def _tls_context(self):
        if self._ssl_context is None:
            self._ssl_context = tls_context(**self._tls)
        return self._ssl_context

    def exec_return(self, instance, operation):
        """The exit code of an exec operation, once it has ended."""
        path = f"/1.0/operations/{quote(operation, safe='')}/wait"
        while True:
            try:
                with self._request("GET", path, params={"timeout": 30}, timeout=self.timeout + 30,
                                   action=f"waiting for a command in {instance}") as answer:
                    data = answer.json()["metadata"]
            except ApiError as exc:
                # Incus reports these exit codes as errors, for a shell's as for its own.
                if exc.message in EXIT_ERRORS:
                    return EXIT_ERRORS[exc.message]
                raise PixelsError(f"The command in {instance} failed: {exc.message}")
            if str(data.get("status", "")).lower() in ("running", "pending"):
                continue
            metadata = data.get("metadata") or {}
            if "return" in metadata:
                return int(metadata["return"])
            raise PixelsError(f"The command in {instance} failed: {data.get('err') or data.get('status')}")

    # -- files ----------------------------------------------------------------------

    def put_file(self, instance, local_path, remote_path, uid=0, gid=0, mode=None):
        with open(local_path, "rb") as handle:
            if mode is None:
                mode = stat.S_IMODE(os.fstat(handle.fileno()).st_mode)
            self._in_instance(instance, "POST", self._instance_path(instance, "files"),
                              f"copying {local_path} to {remote_path} in {instance}", params={"path": remote_path},
                              data=handle, headers=_file_headers(uid, gid, mode)).close()

    def write_file(self, instance, remote_path, data, uid=0, gid=0, mode=0o644):
        """Write ``data`` (bytes) to a file of the instance, running or stopped (owner and mode
        apply to a new file)."""
        action = f"writing {remote_path} in {instance}"
        try:
            self._request("POST", self._instance_path(instance, "files"), params={"path": remote_path},
                          data=bytes(data), headers=_file_headers(uid, gid, mode), action=action).close()
        except ApiError as exc:
            raise PixelsError(f"Incus failed {action}: {exc.message}", status=exc.status)

    def list_directory(self, instance, remote_path):
        """The names in a directory of the instance, running or stopped; None when it does not exist."""
        action = f"listing {remote_path} in {instance}"
        try:
            with self._request("GET", self._instance_path(instance, "files"), params={"path": remote_path},
                               action=action) as answer:
                if answer.headers.get("x-incus-type", "directory") != "directory":
                    raise PixelsError(f"{remote_path} in {instance} is not a directory.")
                return [str(name) for name in answer.json().get("metadata") or []]
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise PixelsError(f"Incus failed {action}: {exc.message}", status=exc.status)

    def _file_response(self, instance, remote_path):
        """A streamed GET of a regular file, following symlinks; None when it does not exist."""
        path = remote_path
        for _hop in range(40):
            action = f"reading {path} in {instance}"
            try:
                answer = self._request("GET", self._instance_path(instance, "files"), params={"path": path},
                                       stream=True, action=action)
            except ApiError as exc:
                problem = self._unavailable(instance)
                if problem:
                    raise problem
                if exc.status == 404:
                    return None
                raise PixelsError(f"Incus failed {action}: {exc.message}")
            kind = answer.headers.get("x-incus-type", "file")
            if kind == "file":
                return answer
            with answer:
                target = answer.read().decode("utf-8", "replace").strip() if kind == "symlink" else None
            if not target:
                raise PixelsError(f"{remote_path} in {instance} is a {kind}, not a file.")
            path = os.path.normpath(os.path.join(os.path.dirname(path), target))
        raise PixelsError(f"{remote_path} in {instance}: too many levels of symbolic links.")

    def fetch_file(self, instance, remote_path, local_path):
        answer = self._file_response(instance, remote_path)
        if answer is None:
            raise PixelsError(f"{remote_path} does not exist in {instance}.", missing=True)
        mode = int(answer.headers.get("x-incus-mode", "0600"), 8) & 0o777
        with answer, local_file(local_path) as handle:
            for chunk in answer.chunks():
                handle.write(chunk)
        return mode

    def read_file(self, instance, remote_path, limit=1 << 20):
        answer = self._file_response(instance, remote_path)
        if answer is None:
            return None
        with answer:
            data = answer.read(limit + 1)
        if len(data) > limit:
            raise PixelsError(f"{remote_path} in {instance} is larger than {limit} bytes.")
        return data


class IncusExec(ExecSession):
    """A command started by IncusIO.exec_start, streaming over the operation's websockets.

    Incus sends output as binary messages and an empty text message at the end of a stream;
    stdin ends the same way. Two threads collect stdout and stderr as they arrive; with a
    ``stdout_sink``, stdout goes to it instead, message by message (None at its end).
    """

    def __init__(self, backend, instance, operation, connections, streams, stdout_sink=None):
        from websockets.exceptions import ConnectionClosed
        self._closed_error = ConnectionClosed
        self._backend = backend
        self._instance = instance
        self._operation = operation
        self._stdin = connections[0]
        self._streams = streams
        self._chunks = ([], [])
        self._sizes = [0, 0]
        self._ended = 0
        self._error = None
        self._stdin_open = True
        self._changed = threading.Condition()
        self._sink = stdout_sink
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
                if index == 0 and self._sink is not None:
                    self._sink(message)
                    continue
                with self._changed:
                    if self._sizes[index] + len(message) > MAX_OUTPUT:
                        self._error = PixelsError(output_limit_message(("stdout", "stderr")[index], self._instance, MAX_OUTPUT))
                        break
                    self._sizes[index] += len(message)
                    self._chunks[index].append(message)
                    self._changed.notify_all()
        except self._closed_error:
            pass  # Incus drops the connection after the end-of-stream message
        except Exception as exc:  # pylint: disable=broad-except
            self._error = self._error or exc  # the first cause, not what it led to on the other stream
        finally:
            if index == 0 and self._sink is not None:
                self._sink(None)
            if isinstance(self._error, PixelsError):
                # Closing its streams ends the command (its next write fails) and the other reader.
                self._close_streams()
            with self._changed:
                self._ended += 1
                self._changed.notify_all()

    def _close_streams(self):
        with contextlib.suppress(Exception):
            self._streams.close()

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
        if isinstance(self._error, PixelsError):
            raise self._error
        if self._error is not None:
            raise PixelsError(f"Lost the output of a command in {self._instance}: {self._error}")
        rc = self._backend.exec_return(self._instance, self._operation)
        stdout, stderr = self.output()
        return ExecResult(rc, stdout, stderr)

    def close(self):
        with contextlib.suppress(Exception):
            self._streams.close()


# -- the local socket, with the standard library ------------------------------------------

class IncusSocketIO(IncusIO):
    """Commands and files in the sandboxes of a local Incus, over its unix socket.

    One kept-alive HTTP connection for the REST calls, one socket per command stream.
    """

    def __init__(self, socket_path, project="default", timeout=60):
        check_socket(socket_path)
        self.project = project or "default"
        self.endpoint = self._socket_path = socket_path
        self.timeout = timeout
        self._tls = dict(client_cert=None, client_key=None, server_cert=None, validate_certs=True)
        self._ssl_context = None
        self._tickets = None  # whether the server sends TLS session tickets (None: not known yet)
        self._connection = None

    def _request(self, method, path, params=None, body=None, data=None, headers=None, stream=False,
                 timeout=None, action="talking to Incus"):
        url = path + "?" + urlencode(dict(params or {}, project=self.project))
        headers = dict(headers or {})
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        start = None
        if hasattr(data, "read"):
            start = data.tell()
            headers["Content-Length"] = str(os.fstat(data.fileno()).st_size - start)
        timeout = timeout or self.timeout
        for attempt in (1, 2):
            if self._connection is None:
                self._connection = UnixHTTPConnection(self._socket_path, timeout, blocksize=STREAM_CHUNK)
            connection = self._connection
            connection.timeout = timeout
            if connection.sock is not None:
                connection.sock.settimeout(timeout)
            try:
                connection.request(method, url, body=data, headers=headers)
                answer = connection.getresponse()
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                # Incus closed the kept-alive connection meanwhile: once more on a new one.
                self.close()
                if attempt == 2:
                    raise PixelsError(f"Lost the connection to Incus at {self.endpoint} while {action}: {exc}")
                if start is not None:
                    data.seek(start)
            except PermissionError:
                self.close()
                raise PixelsError(permission_message(self.endpoint))
            except socket.timeout:
                self.close()
                raise PixelsError(f"Incus at {self.endpoint} did not answer within {timeout} s while {action}.")
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                raise PixelsError(connection_message(self.endpoint, str(exc)))
        headers = {name.lower(): value for name, value in answer.getheaders()}
        if answer.status >= 400:
            raise ApiError(answer.status, error_text(answer.read(), f"{answer.status} {answer.reason}"))
        if stream:
            return Response(answer.status, headers, answer.read, lambda: self._finish(answer))
        content = answer.read()
        if headers.get("content-type", "").startswith("application/json"):
            try:
                decoded = json.loads(content)
            except ValueError:
                decoded = None
            if isinstance(decoded, dict) and decoded.get("type") == "error":  # an operation's wait
                raise ApiError(int(decoded.get("error_code") or 500), decoded.get("error") or "unknown error")
        return Response(answer.status, headers, io.BytesIO(content).read, _noop)

    def _finish(self, answer):
        """Done with a streamed answer: the connection is reusable only if it was read to the end."""
        if not answer.isclosed():
            answer.close()
            self.close()

    def close(self):
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()


def _noop():
    pass


def _file_headers(uid, gid, mode):
    return {"Content-Type": "application/octet-stream", "X-Incus-type": "file", "X-Incus-write": "overwrite",
            "X-Incus-uid": str(int(uid)), "X-Incus-gid": str(int(gid)), "X-Incus-mode": f"{mode:04o}"}


# -- TLS websockets ----------------------------------------------------------------------

# Seconds to wait for a server's session ticket after the TLS handshake; Incus sends it at
# once. A server that sends none costs this wait once per backend, then no more.
TICKET_WAIT = 2


def read_session_tickets(tls_socket, wait):
    """Read the TLS 1.3 session tickets a server sends after the handshake, before any data.

    True once a ticket arrived, False when none came within ``wait`` seconds (the server
    sends none: the caller stops waiting for them). Leaves the socket non-blocking.
    """
    if tls_socket.version() != "TLSv1.3":
        return None  # tickets are part of the handshake before TLS 1.3
    deadline = time.monotonic() + wait
    tls_socket.setblocking(False)
    while True:
        session = tls_socket.session
        if session is not None and session.has_ticket:
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([tls_socket], [], [], remaining)[0]:
            return False
        try:
            data = tls_socket.recv(1)  # processes the handshake records that arrived
        except (ssl.SSLWantReadError, BlockingIOError):
            continue
        if data:
            raise PixelsError("The Incus server sent data before the websocket request: not an Incus API?")
        raise PixelsError("The Incus server closed the connection right after the TLS handshake.")


@functools.lru_cache(maxsize=None)
def unblocking_connection():
    """websockets' ClientConnection, closing its socket so that a blocked read returns.

    websockets closes the socket without shutting it down when a handshake fails, then waits
    for its reading thread; a thread blocked inside a TLS read would keep it waiting forever.
    """
    from websockets.sync.client import ClientConnection  # pylint: disable=import-outside-toplevel

    class UnblockingConnection(ClientConnection):
        def close_socket(self):
            with contextlib.suppress(OSError):
                self.socket.shutdown(socket.SHUT_RDWR)
            super().close_socket()

    return UnblockingConnection


# -- TLS -------------------------------------------------------------------------------

def _first_pem_certificate(path):
    with open(path, "r", encoding="ascii", errors="replace") as handle:
        text = handle.read()
    match = re.search(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", text, re.DOTALL)
    if not match:
        raise PixelsError(f"server_cert={path!r} holds no PEM certificate: copy the server's "
                          f"/var/lib/incus/server.crt there.")
    return ssl.PEM_cert_to_DER_cert(match.group(0))


def default_ca_bundle():
    """The CA bundle requests verifies with (certifi's), or None for the system's."""
    try:
        import certifi  # pylint: disable=import-outside-toplevel
    except ImportError:
        return None
    return certifi.where()


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
        # requests' bundle, else the system's store, never the one SSL_CERT_FILE would choose
        bundle = default_ca_bundle() or ssl.get_default_verify_paths().openssl_cafile
        context = ssl.create_default_context(cafile=bundle)
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
