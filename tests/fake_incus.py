"""A stand-in Incus on a unix socket for unit tests: each test module brings its own handler."""

import socketserver
import threading

import pytest


class FakeIncus(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path, routes, handler):
        self.routes = routes  # the handler's own format
        self.requests = []
        self.connections = 0
        super().__init__(path, handler)


def fake_incus_fixture(handler):
    """A pytest fixture: start(routes) -> (server, socket path); all are stopped afterwards."""

    @pytest.fixture
    def fake(tmp_path):
        servers = []

        def start(routes):
            path = str(tmp_path / f"incus{len(servers)}.socket")
            server = FakeIncus(path, routes, handler)
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
            servers.append(server)
            return server, path

        yield start
        for server in servers:
            server.shutdown()
            server.server_close()

    return fake
