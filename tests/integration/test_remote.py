"""The same scenarios over HTTPS: Incus on 127.0.0.1:8443 with a trusted client certificate."""

import json
import os
import subprocess
import sys

import pytest

from conftest import PROJECT, in_sandbox
from tls_fixtures import make_cert

pytestmark = pytest.mark.remote


@pytest.fixture(scope="module")
def remote(incus_https):
    """Incus over HTTPS on loopback (the incus_https fixture of conftest)."""
    return incus_https


@pytest.fixture
def bundle_env(monkeypatch):
    """The trap seen on these machines: a CA bundle in the environment must not replace the pin."""
    bundle = "/etc/ssl/certs/ca-certificates.crt"
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", bundle)
    monkeypatch.setenv("CURL_CA_BUNDLE", bundle)


def remote_args(settings, **extra):
    args = {k: settings[k] for k in ("remote", "client_cert", "client_key", "server_cert")}
    args.update(extra)
    return args


def test_lifecycle_over_https(ansible, incus, remote, bundle_env, cleanup):
    created = ansible.module("pixels_container", **remote_args(remote, name="far"))
    assert created["changed"] and created["sandbox"]["ipv4"], created
    assert incus.instances.exists("px-far")
    in_sandbox("px-far", "echo one > /root/f")
    assert ansible.module("pixels_checkpoint", **remote_args(remote, name="far", label="one"))["changed"]
    listed = ansible.module("pixels_checkpoint_info", **remote_args(remote, name="far"))
    assert [c["label"] for c in listed["checkpoints"]] == ["one"]
    clone = ansible.module("pixels_container", **remote_args(remote, name="farclone", source="far:one"))
    assert clone["changed"] and in_sandbox("px-farclone", "cat /root/f").strip() == "one"
    # its own machine-id, written through the file API over HTTPS
    assert in_sandbox("px-farclone", "cat /etc/machine-id") != in_sandbox("px-far", "cat /etc/machine-id")
    in_sandbox("px-far", "echo two > /root/f")
    assert ansible.module("pixels_checkpoint", **remote_args(remote, name="far", label="one", state="restored"))["changed"]
    assert in_sandbox("px-far", "cat /root/f").strip() == "one"
    stopped = ansible.module("pixels_container", **remote_args(remote, name="far", state="stopped"))
    assert stopped["sandbox"]["status"] == "stopped" and incus.instances.get("px-far").status == "Stopped"
    assert ansible.module("pixels_container", **remote_args(remote, name="far", state="stopped"))["changed"] is False
    names = [s["name"] for s in ansible.module("pixels_container_info", **remote_args(remote))["sandboxes"]]
    assert {"far", "farclone"} <= set(names)
    for name in ("far", "farclone"):
        assert ansible.module("pixels_container", **remote_args(remote, name=name, state="absent"))["changed"]
    assert not incus.instances.exists("px-far")


def test_remote_settings_from_environment(ansible, incus, remote, bundle_env, monkeypatch):
    monkeypatch.setenv("PIXELS_INCUS_REMOTE", remote["remote"])
    monkeypatch.setenv("PIXELS_INCUS_CLIENT_CERT", remote["client_cert"])
    monkeypatch.setenv("PIXELS_INCUS_CLIENT_KEY", remote["client_key"])
    monkeypatch.setenv("PIXELS_INCUS_SERVER_CERT", remote["server_cert"])
    result = ansible.module("pixels_container_info", socket="/nonexistent.socket")
    assert not result.get("failed"), result  # the remote wins over any socket


def test_wrong_server_certificate_is_refused(ansible, incus, remote, bundle_env):
    other = make_cert(remote["certs"], "impostor")[0]
    result = ansible.module("pixels_container_info", **remote_args(remote, server_cert=other))
    assert result.get("failed") and "did not present the certificate in server_cert" in result["msg"], result


def test_unverifiable_server_without_pin_is_refused(ansible, incus, remote, bundle_env):
    args = remote_args(remote)
    del args["server_cert"]
    result = ansible.module("pixels_container_info", **args)
    assert result.get("failed") and "TLS verification" in result["msg"] and "server_cert" in result["msg"], result


def test_validate_certs_false_is_explicit(ansible, incus, remote):
    args = remote_args(remote, validate_certs=False)
    del args["server_cert"]
    result = ansible.module("pixels_container_info", **args)
    assert not result.get("failed"), result


def test_untrusted_client_certificate(ansible, incus, remote, bundle_env):
    crt, key = make_cert(remote["certs"], "stranger")
    result = ansible.module("pixels_container_info", **remote_args(remote, client_cert=crt, client_key=key))
    assert result.get("failed") and "does not trust client_cert" in result["msg"], result


@pytest.mark.parametrize("change, needle", [
    ({"client_key": None}, "client_cert and client_key go together"),
    ({"remote": "http://127.0.0.1:8443"}, "must be an https:// URL"),
    ({"server_cert": "/nonexistent.crt"}, "server_cert='/nonexistent.crt' does not exist"),
])
def test_bad_remote_options(ansible, incus, remote, change, needle):
    args = {k: v for k, v in dict(remote_args(remote), **change).items() if v is not None}
    result = ansible.module("pixels_container_info", **args)
    assert result.get("failed") and needle in result["msg"], result


def test_unreachable_remote(ansible, incus, remote):
    result = ansible.module("pixels_container_info", **remote_args(remote, remote="https://127.0.0.1:1"))
    assert result.get("failed") and "127.0.0.1:1" in result["msg"] and "Traceback" not in result["msg"], result


def test_inventory_over_https(ansible, incus, remote, bundle_env, golden, tmp_path):
    """The sandboxes inventory lists the same sandboxes through the remote as through the socket."""
    source = tmp_path / "remote.pixels.yml"
    source.write_text("\n".join([
        "plugin: homelab.pixels.sandboxes",
        f"remote: {remote['remote']}",
        f"client_cert: {remote['client_cert']}",
        f"client_key: {remote['client_key']}",
        f"server_cert: {remote['server_cert']}",
        f"project: {PROJECT}",
        "socket: /nonexistent.socket",
        "",
    ]))
    proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-inventory"), "-i", str(source),
                           "--list"], capture_output=True, text=True, env=ansible.env(
                               {"ANSIBLE_INVENTORY_UNPARSED_FAILED": "1"}), timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert golden in data["pixels"]["hosts"]
    hostvars = data["_meta"]["hostvars"][golden]
    assert "10." in json.dumps(hostvars["ansible_host"])
    assert "ready" in json.dumps(hostvars["pixels_checkpoints"])


@pytest.mark.timeout(300)
def test_exec_websockets_over_https_under_load(incus, remote, golden):
    """Incus sends a TLS session ticket after each handshake; read by websockets' thread while
    the upgrade request was written, it lost the answer and hung a CI run for 30 minutes.
    The ticket is now read first; many commands, with the CPUs kept busy, all complete."""
    from ansible_collections.homelab.pixels.plugins.module_utils.incus import IncusBackend

    backend = IncusBackend(project=PROJECT, timeout=10, **remote_args(remote))
    with backend._open_tls() as tls_socket:
        assert tls_socket.version() == "TLSv1.3" and tls_socket.session.has_ticket
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _cpu in range(os.cpu_count() or 2)]
    try:
        for index in range(150):
            session = backend.exec_start("px-golden", ["echo", str(index)])
            try:
                result = session.wait()
            finally:
                session.close()
            assert (result.rc, result.stdout) == (0, f"{index}\n".encode())
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()
