"""Integration fixtures: a real Incus daemon, an Incus project of the tests' own.

Every instance the tests make lives in that project and is deleted afterwards,
even when a test fails; the project itself is deleted at the end of the session.
"""

import hashlib
import json
import os
import subprocess
import sys
import time

import pylxd
import pytest

import isolated
from tls_fixtures import fingerprint, make_cert, tls_stand_in


SOCKET = os.environ.get("PIXELS_TEST_SOCKET", "/var/lib/incus/unix.socket")
PROJECT = os.environ.get("PIXELS_TEST_PROJECT", "pixels-test")
IMAGE = os.environ.get("PIXELS_TEST_IMAGE", "debian/12")
# The test project's own bridge (see tests/isolated.py) and its host address: the sandboxes'
# gateway and DNS server. Made here, at collection, so that module constants can use it.
NETWORK = os.environ.get("PIXELS_TEST_NETWORK") or isolated.bridge_name(PROJECT)
# One run a project: a second `make test` beside the first stops here, naming it, before it
# touches the project or the bridge (runs with projects of their own go side by side). With
# pytest-xdist, the workers of one run would need to share this: take it in the controller.
if os.path.exists(SOCKET):
    try:
        RUN_LOCK = isolated.run_lock(PROJECT)
    except RuntimeError as exc:
        # (pytest.exit here would be reported as a conftest ImportError)
        sys.stderr.write(f"make test: {exc}\n")
        sys.exit(3)
GATEWAY = isolated.ensure_bridge(NETWORK, PROJECT) if os.path.exists(SOCKET) else "192.0.2.1"
# Host nftables tables of the egress tests, one set a project (names of at most 32 characters).
EGRESS_TABLE_TAG = hashlib.sha256(PROJECT.encode()).hexdigest()[:8]


def incus_cli(*args, check=True, timeout=300):
    """The incus CLI in the test project (for checks independent of our code)."""
    proc = subprocess.run(["incus", "--project", PROJECT, *args], capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode:
        raise AssertionError(f"incus {' '.join(args)} failed: {proc.stderr}")
    return proc


def in_sandbox(instance, command, check=True):
    """Run a shell command inside an instance; its stdout."""
    return incus_cli("exec", instance, "--", "sh", "-c", command, check=check).stdout


def wait_for(check, timeout=30, what="condition", interval=0.5):
    """Until check() returns something true; that value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def wait_booted(instance, timeout=60):
    """Until systemd has finished booting (running or degraded); its bus may not be up yet."""
    in_sandbox(instance, f"end=$(($(date +%s) + {timeout})); while [ $(date +%s) -lt $end ]; do "
                         "case $(timeout $((end - $(date +%s))) systemctl is-system-running --wait 2>/dev/null) in "
                         "running|degraded) exit 0 ;; esac; sleep 1; done; exit 1")


def wait_ready(instance, timeout=60):
    """Until boot has finished and systemd-resolved has the DHCP servers: the address shows up
    in Incus a moment before dhclient's hook has handed them over."""
    wait_booted(instance, timeout)
    in_sandbox(instance, f"for i in $(seq {timeout * 5}); do grep -q '^nameserver' /run/systemd/resolve/resolv.conf "
                         "2>/dev/null && exit 0; sleep 0.2; done; exit 1")


def instance_names(client):
    # recursion=1: pylxd's name-only listing keeps "?project=..." in the names
    return sorted(i["name"] for i in client.api.instances.get(params={"recursion": 1}).json()["metadata"])


def snapshot_names(client, instance):
    items = client.api.instances[instance].snapshots.get(params={"recursion": 1}).json()["metadata"]
    return sorted(i["name"] for i in items)


def delete_instances(client, keep=()):
    for name in instance_names(client):
        if name in keep:
            continue
        subprocess.run(["incus", "--project", PROJECT, "delete", "--force", name],
                       capture_output=True, timeout=300, check=False)


def drop_host_egress_rules(table="pixels_egress"):
    """The host nftables table pixels_egress makes, when only this project's sandboxes are in it
    (sandboxes deleted with the incus CLI leave their host rules behind)."""
    # Imported here: importing the collection while conftest loads, before Ansible's collection
    # finder is set up, breaks the collection's metadata for every later import.
    from ansible_collections.homelab.pixels.plugins.module_utils.egress_host import chain_prefix

    listed = subprocess.run(["nft", "-j", "list", "table", "inet", table], capture_output=True, text=True, check=False)
    if listed.returncode:
        return
    ours = chain_prefix(PROJECT)
    chains = [item["chain"]["name"] for item in json.loads(listed.stdout)["nftables"] if "chain" in item]
    if all(name.startswith(ours) for name in chains if name.startswith("sb_")):
        subprocess.run(["nft", "delete", "table", "inet", table], check=False)


@pytest.fixture(scope="session")
def incus_admin():
    """pylxd client on the default project (to create and delete the test project)."""
    if not os.path.exists(SOCKET):
        pytest.fail(f"No Incus socket at {SOCKET}: run `make host` to set up the local Incus first.")
    return pylxd.Client(endpoint=SOCKET)


@pytest.fixture(scope="session")
def incus(incus_admin, tmp_path_factory):
    """pylxd client on the test project, with the PIXELS_* environment pointing at it."""
    # The default project's images; a profile of its own with eth0 on the tests' bridge.
    isolated.ensure_project(PROJECT, NETWORK)
    client = pylxd.Client(endpoint=SOCKET, project=PROJECT)
    delete_instances(client)  # leftovers of an interrupted run
    saved = dict(os.environ)
    os.environ.update({
        "PIXELS_INCUS_SOCKET": SOCKET,
        "PIXELS_INCUS_PROJECT": PROJECT,
        "PIXELS_DEFAULT_IMAGE": IMAGE,
        "PIXELS_DEFAULT_CPU": "1",
        "PIXELS_DEFAULT_MEMORY": "512",
        "XDG_CONFIG_HOME": str(tmp_path_factory.mktemp("xdg")),
    })
    for key in ("PIXELS_CONFIG", "PIXELS_INCUS_REMOTE"):
        os.environ.pop(key, None)
    yield client
    os.environ.clear()
    os.environ.update(saved)
    delete_instances(client)
    drop_host_egress_rules()
    for problem in isolated.drop(PROJECT, NETWORK):  # reported, not fatal: the next run reuses them
        print(f"could not delete {problem}")


@pytest.fixture
def cleanup(incus, request):
    """Delete, after the test, every instance not owned by a longer-lived fixture."""
    keep = set(instance_names(incus))
    yield
    delete_instances(incus, keep=keep)


@pytest.fixture(scope="session")
def golden(incus, ansible):
    """A running sandbox `golden` with a checkpoint `ready` holding /root/marker=ready."""
    result = ansible.module("pixels_container", name="golden")
    assert not result.get("failed"), result
    in_sandbox("px-golden", "echo ready > /root/marker")
    result = ansible.module("pixels_checkpoint", name="golden", label="ready")
    assert result["changed"], result
    yield "golden"
    incus_cli("delete", "--force", "px-golden", check=False)


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    """A TLS stand-in on loopback (see tls_fixtures.tls_stand_in)."""
    with tls_stand_in(tmp_path_factory.mktemp("certs")) as server:
        yield server


HTTPS_ADDRESS = "127.0.0.1:8443"


@pytest.fixture(scope="module")
def incus_https(incus, tmp_path_factory):
    """Incus' HTTPS listener and a client certificate restricted to the test project; undone afterwards."""
    certs = tmp_path_factory.mktemp("https")
    crt, key = make_cert(certs, f"pixels-test-client-{PROJECT}")
    with isolated.host_wide("Incus' HTTPS address"):
        previous = subprocess.run(["incus", "config", "get", "core.https_address"],
                                  capture_output=True, text=True, check=True).stdout.strip()
        if not previous:
            subprocess.run(["incus", "config", "set", f"core.https_address={HTTPS_ADDRESS}"], check=True)
        subprocess.run(["incus", "config", "trust", "add-certificate", crt, "--name", f"pixels-test-client-{PROJECT}",
                        "--restricted", "--projects", PROJECT], check=True)
        try:
            yield {"remote": f"https://{previous or HTTPS_ADDRESS}", "client_cert": crt, "client_key": key,
                   "server_cert": "/var/lib/incus/server.crt", "certs": certs}
        finally:
            subprocess.run(["incus", "config", "trust", "remove", fingerprint(crt)[:12]], check=False)
            if not previous:
                subprocess.run(["incus", "config", "unset", "core.https_address"], check=False)


def pytest_sessionfinish(session, exitstatus):  # pylint: disable=unused-argument
    """The bridge is made when this file loads: drop it (and the project) even when no test used
    the incus fixture, whose teardown does the same."""
    if os.path.exists(SOCKET):
        for problem in isolated.drop(PROJECT, NETWORK):
            print(f"could not delete {problem}")
