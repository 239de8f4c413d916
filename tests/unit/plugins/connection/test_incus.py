"""The homelab.pixels.incus connection plugin's own logic, without Incus."""

import os
import socket
import ssl
import threading
import warnings

import pytest
from ansible.errors import AnsibleError
from ansible.playbook.play_context import PlayContext
from ansible.plugins.loader import become_loader, connection_loader, init_plugin_loader
from websockets.exceptions import ConnectionClosedError
from websockets.sync.server import serve

from tls_fixtures import make_cert, remote_backend
from ansible_collections.homelab.pixels.plugins.connection.incus import (
    ROOT_ACCOUNT,
    make_account,
    parse_group_ids,
    parse_passwd,
    remote_path,
)
from ansible_collections.homelab.pixels.plugins.module_utils.errors import PixelsError
from ansible_collections.homelab.pixels.plugins.module_utils.incus_io import IncusExec, tls_context

PASSWD = b"""root:x:0:0:root:/root:/bin/bash
pixel:x:1000:1000:Pixel,,,:/home/pixel:/bin/bash
pixels:x:1001:1001::/home/pixels:/bin/sh
broken:x:abc:1::/:/bin/sh
nohome:x:1002:1002:::
"""

GROUP = b"""root:x:0:
adm:x:4:syslog,pixel
sudo:x:27:pixels,pixel
pixel:x:1000:pixel
pixels:x:1001:
odd:x:notanumber:pixel
"""


# -- users --------------------------------------------------------------------------

@pytest.mark.parametrize("user, expected", [
    ("pixel", ("pixel", 1000, 1000, "/home/pixel", "/bin/bash")),
    ("pixels", ("pixels", 1001, 1001, "/home/pixels", "/bin/sh")),
    ("1001", ("pixels", 1001, 1001, "/home/pixels", "/bin/sh")),
    ("nohome", ("nohome", 1002, 1002, "/", "")),
    ("broken", None),
    ("nobody", None),
    ("pix", None),
    ("4242", None),
])
def test_parse_passwd(user, expected):
    assert parse_passwd(PASSWD, user) == expected


def test_parse_group_ids_lists_supplementary_groups_only():
    assert parse_group_ids(GROUP, "pixel", 1000) == [4, 27]
    assert parse_group_ids(GROUP, "pixels", 1001) == [27]
    assert parse_group_ids(GROUP, "nobody", 65534) == []


def test_account_without_supplementary_groups_runs_as_the_user():
    account = make_account("pixel", 1000, 1000, "/home/pixel", "/bin/bash")
    assert account.prefix == () and account.exec_ids == (1000, 1000)
    assert account.env == {"HOME": "/home/pixel", "USER": "pixel", "LOGNAME": "pixel", "SHELL": "/bin/bash"}


def test_account_with_groups_drops_privileges_with_setpriv():
    account = make_account("pixel", 1000, 1000, "/home/pixel", "", [4, 27], "/usr/bin/setpriv")
    assert account.prefix == ("/usr/bin/setpriv", "--reuid=1000", "--regid=1000", "--groups=4,27", "--")
    assert account.exec_ids == (0, 0)  # setpriv starts as root, then drops
    assert (account.uid, account.gid) == (1000, 1000)  # files still belong to the user
    assert "SHELL" not in account.env


def test_account_with_groups_but_no_setpriv_keeps_the_primary_group():
    account = make_account("pixel", 1000, 1000, "/home/pixel", "/bin/sh", [4], None)
    assert account.prefix == () and account.exec_ids == (1000, 1000)


def test_root_account():
    assert ROOT_ACCOUNT.exec_ids == (0, 0) and ROOT_ACCOUNT.env == {} and ROOT_ACCOUNT.home is None
    assert ROOT_ACCOUNT.runner_ids == {"uid": None, "gid": None, "groups": None}  # the runner is root


def test_runner_switches_to_the_user_with_all_groups():
    with_groups = make_account("pixel", 1000, 1000, "/home/pixel", "", [4, 27], None)
    assert with_groups.runner_ids == {"uid": 1000, "gid": 1000, "groups": [4, 27]}
    alone = make_account("pixel", 1000, 1000, "/home/pixel", "")
    assert alone.runner_ids == {"uid": 1000, "gid": 1000, "groups": []}  # root's groups dropped


@pytest.mark.parametrize("path, home, expected", [
    ("/tmp/x", "/home/pixel", "/tmp/x"),
    ("x/y", "/home/pixel", "/home/pixel/x/y"),
    ("~/x", "/home/pixel", "/home/pixel/x"),
    ("~", "/home/pixel/", "/home/pixel/"),
    ("x", None, "/root/x"),
    ("x", "/", "/x"),
])
def test_remote_path(path, home, expected):
    account = make_account("u", 1, 1, home, "") if home else ROOT_ACCOUNT
    assert remote_path(path, account) == expected


# -- options --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def loader():
    with warnings.catch_warnings():  # pytest-ansible may have set up the collection finder already
        warnings.simplefilter("ignore")
        init_plugin_loader([os.environ["ANSIBLE_COLLECTIONS_PATH"]])


def connection(hostvars):
    plugin = connection_loader.get("homelab.pixels.incus", PlayContext())
    plugin.set_options(var_options=hostvars)
    return plugin


@pytest.mark.parametrize("hostvars, instance", [
    ({"inventory_hostname": "mybox"}, "px-mybox"),
    ({"inventory_hostname": "px-mybox"}, "px-mybox"),
    ({"inventory_hostname": "alias", "pixels_instance": "px-real"}, "px-real"),
    ({"inventory_hostname": "alias", "pixels_instance": "real"}, "px-real"),
    # ansible_host holds the address for ssh users; it never names the instance
    ({"inventory_hostname": "mybox", "ansible_host": "10.0.0.5"}, "px-mybox"),
    ({"inventory_hostname": "alias", "ansible_host": "other", "pixels_instance": "px-real"}, "px-real"),
])
def test_instance(loader, hostvars, instance):
    # pylint: disable=protected-access
    assert connection(hostvars)._instance() == instance


def test_bad_instance_name_says_what_to_set(loader):
    with pytest.raises(AnsibleError, match="not a valid sandbox name.*pixels_instance"):
        connection({"inventory_hostname": "10.0.0.5"})._instance()  # pylint: disable=protected-access


def test_settings_from_vars_and_environment(loader, monkeypatch):
    # pylint: disable=protected-access
    monkeypatch.setenv("PIXELS_INCUS_PROJECT", "from-env")
    monkeypatch.setenv("PIXELS_INCUS_VALIDATE_CERTS", "maybe")
    plugin = connection({"inventory_hostname": "box", "pixels_incus_socket": "/run/incus.socket",
                         "pixels_incus_validate_certs": False})
    params = plugin._settings_params()
    # vars are passed on; what Ansible read from PIXELS_* is left to settings.resolve
    assert params["socket"] == "/run/incus.socket" and params["validate_certs"] is False
    assert params["project"] is None
    assert plugin.get_option("pipelining") is True  # on by default for this connection
    assert plugin.get_option("remote_user") is None


def test_settings_errors_are_ansible_errors(loader, monkeypatch, tmp_path):
    broken = tmp_path / "config.toml"
    broken.write_text("[incus\n")
    plugin = connection({"inventory_hostname": "box", "pixels_config_file": str(broken)})
    with pytest.raises(AnsibleError, match="not valid TOML"):
        plugin._connect()  # pylint: disable=protected-access
    monkeypatch.setenv("PIXELS_INCUS_VALIDATE_CERTS", "maybe")
    plugin = connection({"inventory_hostname": "box"})
    with pytest.raises(AnsibleError, match="PIXELS_INCUS_VALIDATE_CERTS must be true or false"):
        plugin._connect()  # pylint: disable=protected-access


# -- command streams -----------------------------------------------------------------------

class FakeSocket:
    """A websocket as IncusExec uses it: scripted incoming messages, recorded sends."""

    def __init__(self, incoming=(), fail_send=False):
        self.incoming = list(incoming)
        self.sent = []
        self.fail_send = fail_send
        self.closed = False

    def recv(self):
        if not self.incoming:
            raise ConnectionClosedError(None, None)
        message = self.incoming.pop(0)
        if isinstance(message, Exception):
            raise message
        return message

    def send(self, data):
        if self.fail_send:
            raise ConnectionClosedError(None, None)
        self.sent.append(bytes(data) if not isinstance(data, str) else data)


class FakeBackend:
    def __init__(self, rc):
        self.rc = rc

    def exec_return(self, instance, operation):
        assert (instance, operation) == ("px-box", "op")
        return self.rc


class Closer:
    closed = False

    def close(self):
        self.closed = True


def session(stdout, stderr, rc=0, stdin=None):
    streams = Closer()
    stdin = stdin or FakeSocket()
    run = IncusExec(FakeBackend(rc), "px-box", "op", [stdin, FakeSocket(stdout), FakeSocket(stderr)], streams)
    return run, stdin, streams


def test_exec_collects_output_until_the_end_of_stream_marker():
    run, stdin, streams = session([b"out", b"put", "", b"never read"], [b"err", ""], rc=3)
    assert run.write(b"x" * 10) is True
    with run:
        result = run.wait()
    assert result == (3, b"output", b"err")
    assert stdin.sent == [b"x" * 10, ""]  # the data, then end of input
    assert streams.closed


def test_exec_takes_a_dropped_connection_as_the_end():
    run = session([b"partial"], [], rc=0)[0]
    assert run.wait() == (0, b"partial", b"")


def test_exec_stdin_in_chunks_and_closed_stdin():
    big = os.urandom((1 << 20) + 5)
    run, stdin = session([""], [""])[:2]
    assert run.write(big) is True
    assert [len(chunk) for chunk in stdin.sent] == [1 << 20, 5] and b"".join(stdin.sent) == big
    run.wait()
    refused = session([""], [""], stdin=FakeSocket(fail_send=True))[0]
    assert refused.write(b"data") is False  # the command ended before reading it
    assert refused.write(b"more") is False
    assert refused.wait().rc == 0


def test_exec_reports_a_broken_stream():
    run = session([b"a", ValueError("garbage frame")], [""])[0]
    with pytest.raises(PixelsError, match="Lost the output.*garbage frame"):
        run.wait()


def test_wait_output_wakes_up_for_new_output():
    gate = threading.Event()

    class SlowSocket(FakeSocket):
        def recv(self):
            if len(self.incoming) == 1:
                gate.wait(5)
            return super().recv()

    streams = Closer()
    run = IncusExec(FakeBackend(0), "px-box", "op", [FakeSocket(), SlowSocket([b"prompt: ", ""]), FakeSocket([""])],
                    streams)
    while run.output()[0] != b"prompt: ":
        assert run.wait_output(5) is True
    while run.wait_output(0.05):  # stderr's end may still be on its way
        pass
    assert run.output() == (b"prompt: ", b"")
    assert run.wait_output(0.05) is False  # nothing new, stdout still open
    gate.set()
    assert run.wait_output(5) is True
    assert run.wait() == (0, b"prompt: ", b"")


# -- TLS for the command streams ------------------------------------------------------------

@pytest.fixture(scope="module")
def wss(tmp_path_factory):
    """A websocket server over TLS on loopback (self-signed); records the paths it was asked for."""
    certs = tmp_path_factory.mktemp("certs")
    server_crt, server_key = make_cert(certs, "server")
    other_crt = make_cert(certs, "other")[0]
    client_crt, client_key = make_cert(certs, "client")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(server_crt, server_key)
    paths = []

    def handler(websocket):
        paths.append(websocket.request.path)
        websocket.send(b"hello")

    with serve(handler, "127.0.0.1", 0, ssl=context) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        port = server.socket.getsockname()[1]
        yield {"url": f"https://127.0.0.1:{port}", "server_cert": server_crt, "other_cert": other_crt,
               "client_cert": client_crt, "client_key": client_key, "paths": paths}
        server.shutdown()


@pytest.fixture
def ca_bundle_env(monkeypatch, wss):
    """The environment trusts the server: the pin (or its absence) must still decide."""
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE"):
        monkeypatch.setenv(name, wss["server_cert"])


def test_pinned_stream_connects(wss, ca_bundle_env):
    backend = remote_backend(wss["url"], server_cert=wss["server_cert"], client_cert=wss["client_cert"],
                             client_key=wss["client_key"])
    with backend._websocket("op-1", "s3cret") as websocket:  # pylint: disable=protected-access
        assert websocket.recv() == b"hello"
    assert wss["paths"][-1] == "/1.0/operations/op-1/websocket?secret=s3cret&project=agents"


def test_wrong_pin_refused_before_the_secret_is_sent(wss, ca_bundle_env):
    asked = len(wss["paths"])
    backend = remote_backend(wss["url"], server_cert=wss["other_cert"])
    with pytest.raises(PixelsError, match="did not present the certificate in server_cert.*fingerprint mismatch"):
        backend._websocket("op-2", "s3cret")  # pylint: disable=protected-access
    assert len(wss["paths"]) == asked


def test_unpinned_untrusted_server_refused_whatever_the_environment(wss, ca_bundle_env):
    backend = remote_backend(wss["url"])
    with pytest.raises(PixelsError, match="TLS verification of .* failed"):
        backend._websocket("op-3", "s3cret")  # pylint: disable=protected-access


def test_validate_certs_false_is_the_only_way_around(wss):
    backend = remote_backend(wss["url"], validate_certs=False)
    with backend._websocket("op-4", "x") as websocket:  # pylint: disable=protected-access
        assert websocket.recv() == b"hello"


def test_pinned_context_checks_the_fingerprint_not_the_name(wss):
    """The pin decides, at the handshake: the pinned certificate passes under any name, and
    another certificate fails even where the name would match."""
    host, port = wss["url"][len("https://"):].split(":")
    context = tls_context(server_cert=wss["server_cert"])
    with socket.create_connection((host, int(port))) as raw:
        with context.wrap_socket(raw, server_hostname="not-the-name.invalid") as tls:
            assert tls.version()
    context = tls_context(server_cert=wss["other_cert"])
    with socket.create_connection((host, int(port))) as raw:
        with pytest.raises(ssl.SSLCertVerificationError, match="fingerprint mismatch"):
            context.wrap_socket(raw, server_hostname=host)


def test_pin_file_without_certificate(tmp_path):
    junk = tmp_path / "junk.crt"
    junk.write_text("not a certificate")
    with pytest.raises(PixelsError, match="holds no PEM certificate"):
        tls_context(server_cert=str(junk))


# -- who moves files ---------------------------------------------------------------------

@pytest.mark.parametrize("user, become_user, expected", [
    ("root", None, None),  # root's own files: the Incus file API
    ("root", "root", None),
    ("pixel", None, ("pixel", False)),  # as pixel, his links lead only where he may go
    ("pixel", "root", ("pixel", False)),  # Ansible's transfers are the connection user's
    ("root", "pixel", ("root", True)),  # root in a directory handed to pixel: no links at all
])
def test_transfer_account(loader, user, become_user, expected):
    # pylint: disable=protected-access
    plugin = connection({"inventory_hostname": "mybox", "ansible_user": user})
    if become_user:
        become = become_loader.get("sudo")
        become.set_options(direct={"become_user": become_user})
        plugin.set_become_plugin(become)
    account = ROOT_ACCOUNT if user == "root" else make_account("pixel", 1000, 1000, "/home/pixel", "/bin/sh")
    how = plugin._transfer_account(account)
    assert (how if how is None else (how[0].name, how[1])) == expected
