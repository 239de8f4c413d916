"""The pylxd-free read client against a stand-in Incus on a unix socket."""

import http.server
import json
import os
import socket
from urllib.parse import parse_qs, urlsplit

import pytest

from fake_incus import fake_incus_fixture

from ansible_collections.homelab.pixels.plugins.module_utils.errors import PixelsError
from ansible_collections.homelab.pixels.plugins.module_utils.incus_api import UnixSocketReader, check_socket

INSTANCE = {
    "name": "px-box", "status": "Running", "description": "d", "created_at": "2026-01-01T00:00:00Z",
    "expanded_config": {"limits.cpu": "2", "user.pixels.base": "base"}, "snapshots": [{"name": "ready"}],
    "expanded_devices": {"root": {"type": "disk", "path": "/", "pool": "pixels"}},
    "state": {"network": {"eth0": {"addresses": [{"family": "inet", "address": "10.1.0.5", "scope": "global"}]}}},
}
# recursion=1 has neither state nor snapshots
BRIEF = {k: v for k, v in INSTANCE.items() if k not in ("state", "snapshots")}
STOPPED = dict(BRIEF, name="px-off", status="Stopped")
VOLUMES = [
    {"name": "px-off", "type": "container", "created_at": "2026-01-01T00:00:00Z"},
    {"name": "px-off/zz-first", "type": "container", "created_at": "2026-01-02T00:00:00Z"},
    {"name": "px-off/aa-second", "type": "container", "created_at": "2026-01-03T00:00:00Z"},
    {"name": "other/ready", "type": "container", "created_at": "2026-01-02T00:00:00Z"},
    {"name": "px-off/x", "type": "custom", "created_at": "2026-01-02T00:00:00Z"},
]


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # pylint: disable=invalid-name
        url = urlsplit(self.path)
        self.server.requests.append((url.path, parse_qs(url.query)))
        recursion = parse_qs(url.query).get("recursion", ["0"])[0]
        missing = (404, {"type": "error", "error": "not found", "error_code": 404})
        status, body = self.server.routes.get(f"{url.path}?recursion={recursion}",
                                              self.server.routes.get(url.path, missing))
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args):  # pylint: disable=arguments-differ
        pass

    def address_string(self):
        return "unix"


fake = fake_incus_fixture(Handler)


def sync(metadata):
    return 200, {"type": "sync", "status": "Success", "status_code": 200, "metadata": metadata}


def test_any_running_sandbox_means_the_full_listing(fake):
    server, path = fake({"/1.0/instances": sync([INSTANCE, dict(INSTANCE, name="other")])})
    server.routes["/1.0/instances?recursion=1"] = sync([BRIEF, STOPPED, dict(BRIEF, name="other")])
    boxes = UnixSocketReader(path, "agents").list_sandboxes()
    assert [b.name for b in boxes] == ["box"]
    assert boxes[0].ipv4 == ["10.1.0.5"] and boxes[0].checkpoints == ["ready"] and boxes[0].cpu == 2
    assert boxes[0].metadata == {"user.pixels.base": "base"}
    assert server.requests == [("/1.0/instances", {"recursion": ["1"], "project": ["agents"]}),
                               ("/1.0/instances", {"recursion": ["2"], "project": ["agents"]})]


def test_all_stopped_means_no_state(fake):
    """Checkpoints come from the pool's volume list, in creation order; Incus computes no state."""
    server, path = fake({"/1.0/instances?recursion=1": sync([STOPPED, dict(STOPPED, name="other")]),
                         "/1.0/storage-pools/pixels/volumes": sync(VOLUMES)})
    boxes = UnixSocketReader(path, "agents").list_sandboxes()
    assert [(b.name, b.status, b.checkpoints, b.ipv4) for b in boxes] == [
        ("off", "stopped", ["zz-first", "aa-second"], [])]
    assert server.requests == [("/1.0/instances", {"recursion": ["1"], "project": ["agents"]}),
                               ("/1.0/storage-pools/pixels/volumes", {"recursion": ["1"], "project": ["agents"]})]


def test_stopped_without_root_pool_falls_back_to_the_full_listing(fake):
    odd = dict(STOPPED, expanded_devices={})
    server, path = fake({"/1.0/instances?recursion=1": sync([odd]), "/1.0/instances": sync([dict(odd, snapshots=[])])})
    assert [b.name for b in UnixSocketReader(path).list_sandboxes()] == ["off"]
    assert [r[1]["recursion"] for r in server.requests] == [["1"], ["2"]]


def test_empty_project_is_checked(fake):
    server, path = fake({"/1.0/instances": sync([]), "/1.0/projects/agents": sync({"name": "agents"})})
    assert UnixSocketReader(path, "agents").list_sandboxes() == []
    assert [r[0] for r in server.requests] == ["/1.0/instances", "/1.0/projects/agents"]


def test_missing_project(fake):
    _server, path = fake({"/1.0/instances": sync([])})
    with pytest.raises(PixelsError) as err:
        UnixSocketReader(path, "nope").list_sandboxes()
    assert err.value.message == (f"project='nope' does not exist on {path}: create it "
                                 f"('incus project create nope') or pick another.")


def test_default_project_is_not_checked(fake):
    server, path = fake({"/1.0/instances": sync([])})
    assert UnixSocketReader(path).list_sandboxes() == []
    assert len(server.requests) == 1


def test_api_error(fake):
    _server, path = fake({"/1.0/instances": (500, {"type": "error", "error": "database is locked",
                                                   "error_code": 500})})
    with pytest.raises(PixelsError, match="Incus failed listing sandboxes: database is locked"):
        UnixSocketReader(path).list_sandboxes()


def test_not_incus(fake):
    _server, path = fake({"/1.0/instances": (200, b"<html>hello</html>")})
    with pytest.raises(PixelsError, match="not the Incus API.*is it Incus' unix.socket"):
        UnixSocketReader(path).list_sandboxes()


def test_nothing_listens(tmp_path):
    path = str(tmp_path / "dead.socket")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(path)
    sock.close()
    with pytest.raises(PixelsError, match="Nothing answers at .*dead.socket: is the Incus daemon running"):
        UnixSocketReader(path).list_sandboxes()


def test_timeout(tmp_path):
    path = str(tmp_path / "mute.socket")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(path)
    sock.listen(1)  # accepts, never answers
    try:
        with pytest.raises(PixelsError, match="did not answer within 0.2 s while listing sandboxes"):
            UnixSocketReader(path, timeout=0.2).list_sandboxes()
    finally:
        sock.close()


def test_socket_checks(tmp_path):
    with pytest.raises(PixelsError, match="does not exist: is Incus installed"):
        check_socket(str(tmp_path / "nope.socket"))
    plain = tmp_path / "plain"
    plain.write_text("")
    with pytest.raises(PixelsError, match="is not a unix socket"):
        check_socket(str(plain))


def test_permission_message(fake, monkeypatch):
    _server, path = fake({})
    monkeypatch.setattr(os, "access", lambda *_args: False)
    with pytest.raises(PixelsError, match="No permission to use the Incus socket.*incus-admin"):
        UnixSocketReader(path)
