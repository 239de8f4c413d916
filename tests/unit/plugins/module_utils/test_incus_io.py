"""IncusSocketIO's REST transport against a stand-in Incus on a unix socket (HTTP/1.1, kept alive)."""

import http.server
import json
import os
from urllib.parse import parse_qs, urlsplit

import pytest

from fake_incus import fake_incus_fixture

from ansible_collections.homelab.pixels.plugins.module_utils.errors import PixelsError, SandboxUnavailable
from ansible_collections.homelab.pixels.plugins.module_utils.incus_io import ApiError, IncusSocketIO


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as Incus

    def setup(self):
        super().setup()
        self.server.connections += 1

    def _answer(self):
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.requests.append((self.command, url.path, parse_qs(url.query), dict(self.headers), body))
        route = self.server.routes.get((self.command, url.path))
        if callable(route):
            route = route(self)
        status, headers, payload = route or (404, {}, {"type": "error", "error": "not found", "error_code": 404})
        raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        headers = dict({"Content-Type": "application/json"} if not isinstance(payload, bytes) else {}, **headers)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    do_GET = do_POST = _answer  # noqa: N815  pylint: disable=invalid-name

    def log_message(self, *args):  # pylint: disable=arguments-differ
        pass

    def address_string(self):
        return "unix"


fake = fake_incus_fixture(Handler)


def sync(metadata, status=200):
    return status, {}, {"type": "sync", "status": "Success", "status_code": 200, "metadata": metadata}


def error(message, code):
    return code, {}, {"type": "error", "error": message, "error_code": code}


def test_requests_share_one_connection_and_carry_the_project(fake):
    server, path = fake({("GET", "/1.0/instances/px-box/state"): sync({"status": "Running"})})
    io = IncusSocketIO(path, "agents")
    for _round in range(3):
        with io._request("GET", "/1.0/instances/px-box/state") as answer:  # pylint: disable=protected-access
            assert answer.json()["metadata"]["status"] == "Running"
    assert server.connections == 1
    assert [r[2] for r in server.requests] == [{"project": ["agents"]}] * 3
    io.close()


def test_error_answers(fake):
    server, path = fake({
        ("GET", "/1.0/operations/op/wait"): (200, {}, {"type": "error", "error": "Command not found", "error_code": 400}),
        ("GET", "/1.0/broken"): (500, {}, b"not json"),
    })
    io = IncusSocketIO(path)
    with pytest.raises(ApiError) as raised:
        io._request("GET", "/1.0/operations/op/wait")  # pylint: disable=protected-access
    assert (raised.value.status, raised.value.message) == (400, "Command not found")
    with pytest.raises(ApiError, match="404 Not Found|not found"):
        io._request("GET", "/1.0/nothing")  # pylint: disable=protected-access
    with pytest.raises(ApiError, match="500"):
        io._request("GET", "/1.0/broken")  # pylint: disable=protected-access
    assert len(server.requests) == 3


def test_exit_codes_that_incus_reports_as_errors(fake):
    fake_server, path = fake({})
    io = IncusSocketIO(path)
    for message, code in (("Command not found", 127), ("Command not executable", 126)):
        answer = {"type": "error", "error": message, "error_code": 400}
        fake_server.routes[("GET", "/1.0/operations/op/wait")] = (200, {}, answer)
        assert io.exec_return("px-box", "op") == code
    fake_server.routes[("GET", "/1.0/operations/op/wait")] = sync({"status": "Success", "metadata": {"return": 3}})
    assert io.exec_return("px-box", "op") == 3
    fake_server.routes[("GET", "/1.0/operations/op/wait")] = error("boom", 500)
    with pytest.raises(PixelsError, match="The command in px-box failed: boom"):
        io.exec_return("px-box", "op")


def test_a_closed_keepalive_connection_is_retried_once(fake):
    def close_after(handler):
        handler.close_connection = True
        return sync({"status": "Running"})

    server, path = fake({("GET", "/1.0/instances/px-box/state"): close_after})
    io = IncusSocketIO(path)
    for _round in range(2):
        io._request("GET", "/1.0/instances/px-box/state").close()  # pylint: disable=protected-access
    assert server.connections == 2 and len(server.requests) == 2


@pytest.mark.parametrize("status, needle", [
    ("Stopped", "is stopped, not running"),
    ("Frozen", "is frozen, not running"),
])
def test_sandbox_not_running(fake, status, needle):
    fake_server, path = fake({
        ("POST", "/1.0/instances/px-box/exec"): error("Instance is not running", 400),
        ("GET", "/1.0/instances/px-box/state"): sync({"status": status}),
    })
    with pytest.raises(SandboxUnavailable, match=needle) as raised:
        IncusSocketIO(path, "agents").exec_start("px-box", ["true"])
    assert raised.value.status == status.lower() and "state: started" in raised.value.message
    assert [r[1] for r in fake_server.requests] == ["/1.0/instances/px-box/exec", "/1.0/instances/px-box/state"]


def test_sandbox_or_project_missing(fake):
    fake_server, path = fake({("GET", "/1.0/projects/agents"): sync({"name": "agents"})})
    with pytest.raises(SandboxUnavailable, match="'box' does not exist.*project agents") as raised:
        IncusSocketIO(path, "agents").exec_start("px-box", ["true"])
    assert raised.value.status == "missing"
    del fake_server.routes[("GET", "/1.0/projects/agents")]
    with pytest.raises(PixelsError, match="project='agents' does not exist.*incus project create"):
        IncusSocketIO(path, "agents").exec_start("px-box", ["true"])


def test_put_file_streams_with_owner_and_mode(fake, tmp_path):
    server, path = fake({("POST", "/1.0/instances/px-box/files"): sync({})})
    source = tmp_path / "f"
    source.write_bytes(b"x" * 100000)
    os.chmod(source, 0o751)
    IncusSocketIO(path).put_file("px-box", str(source), "/home/u/f", uid=1000, gid=1001)
    method, url, query, headers, body = server.requests[0]
    assert (method, url, query["path"]) == ("POST", "/1.0/instances/px-box/files", ["/home/u/f"])
    assert (headers["X-Incus-uid"], headers["X-Incus-gid"], headers["X-Incus-mode"]) == ("1000", "1001", "0751")
    assert headers["Content-Length"] == "100000" and body == b"x" * 100000
    assert headers["X-Incus-write"] == "overwrite" and headers["X-Incus-type"] == "file"


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_fetch_file_follows_symlinks_with_the_controllers_mode(fake, tmp_path, umask):
    """The fetched file has the mode any new file of the controller's user gets, never the
    sandbox's (a world-writable setuid file there stays neither here)."""
    def files(handler):
        asked = parse_qs(urlsplit(handler.path).query)["path"][0]
        if asked == "/etc/link":
            return 200, {"X-Incus-type": "symlink", "X-Incus-mode": "0777"}, b"real/file\n"
        if asked == "/etc/real/file":
            return 200, {"X-Incus-type": "file", "X-Incus-mode": "4777"}, b"content"
        if asked == "/etc":
            return 200, {"X-Incus-type": "directory"}, json.dumps({"metadata": []}).encode()
        return error("not found", 404)

    fake_server, path = fake({("GET", "/1.0/instances/px-box/files"): files,
                              ("GET", "/1.0/instances/px-box/state"): sync({"status": "Running"})})
    io = IncusSocketIO(path)
    target = tmp_path / "out"
    saved = os.umask(umask)
    try:
        assert io.fetch_file("px-box", "/etc/link", str(target)) == 0o777
    finally:
        os.umask(saved)
    assert target.read_bytes() == b"content" and (os.stat(target).st_mode & 0o7777) == 0o666 & ~umask
    assert io.read_file("px-box", "/etc/real/file") == b"content"
    assert io.read_file("px-box", "/etc/nothing") is None
    assert fake_server.connections == 1  # answers read to the end keep the connection
    with pytest.raises(PixelsError, match="larger than 3 bytes"):
        io.read_file("px-box", "/etc/real/file", limit=3)
    with pytest.raises(PixelsError, match="is a directory, not a file"):
        io.fetch_file("px-box", "/etc", str(target))
    with pytest.raises(PixelsError, match="does not exist in px-box") as raised:
        io.fetch_file("px-box", "/etc/nothing", str(target))
    assert raised.value.details["missing"]
    assert target.read_bytes() == b"content"  # untouched by the failures
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".pixels-fetch-")]
    assert fake_server.connections == 3  # a body left unread drops its connection (twice here)


def test_nothing_answers(tmp_path):
    import socket  # pylint: disable=import-outside-toplevel
    dead = str(tmp_path / "dead.socket")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(dead)
    sock.close()
    with pytest.raises(PixelsError, match="Nothing answers"):
        IncusSocketIO(dead).exec_start("px-box", ["true"])
    with pytest.raises(PixelsError, match="does not exist"):
        IncusSocketIO(str(tmp_path / "none.socket"))
