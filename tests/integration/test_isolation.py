"""The tests' project never meets the user's sandboxes, and a name clash on a shared bridge is
explained, naming the project that holds the name.

Incus refuses to start an instance whose DNS name another instance on the same bridge has,
whatever its project: with the tests on the user's bridge, `make site` (px-base-dev, px-demo)
followed by `make test` failed. The tests' project has a bridge of its own (tests/isolated.py).
"""

import json
import secrets

import pytest

import isolated
from conftest import NETWORK, PROJECT, incus_cli, instance_names
from test_bad_input import failed


def nic_networks(project, profile="default"):
    shown = json.loads(isolated.incus("query", f"/1.0/profiles/{profile}?project={project}").stdout)
    return {device.get("network") for device in shown["devices"].values() if device.get("type") == "nic"}


@pytest.fixture
def other_project():
    """A project of another user, dropped afterwards (instances first)."""
    made = []

    def make(network=None):
        name = f"{PROJECT}-o{secrets.token_hex(3)}"
        made.append(name)
        if network:
            isolated.ensure_project(name, network)  # a profile of its own on that bridge
        else:  # like a user's project: the default project's profile, so the user's bridge
            isolated.incus("project", "create", name, "-c", "features.images=false", "-c", "features.profiles=false")
        return name

    yield make
    for name in made:
        for instance in json.loads(isolated.incus("list", "--project", name, "--format", "json").stdout):
            isolated.incus("delete", "--force", "--project", name, instance["name"], check=False)
        isolated.incus("project", "delete", name, check=False)


def test_the_tests_bridge_is_not_the_users(incus):
    assert nic_networks(PROJECT) == {NETWORK}
    assert NETWORK not in nic_networks("default")


def test_a_sandbox_of_the_users_does_not_stop_the_tests_one(ansible, incus, cleanup, other_project):
    """make site, then make test: the user's px-NAME on the user's bridge, the tests' px-NAME beside it."""
    name = f"iso-{secrets.token_hex(3)}"
    users = other_project()
    isolated.incus("launch", "debian/12", f"px-{name}", "--project", users, "-c", "limits.memory=256MiB")
    result = ansible.module("pixels_container", name=name)
    assert not result.get("failed"), result
    assert incus_cli("list", f"px-{name}", "-c", "s", "-f", "csv").stdout.strip() == "RUNNING"


def test_a_name_taken_on_the_bridge_names_the_project_that_holds_it(ansible, incus, cleanup, other_project):
    name = f"iso-{secrets.token_hex(3)}"
    neighbour = other_project(NETWORK)  # shares the tests' bridge
    isolated.incus("launch", "debian/12", f"px-{name}", "--project", neighbour, "-c", "limits.memory=256MiB")
    before = instance_names(incus)
    failed(ansible.module("pixels_container", name=name),
           f"its name 'px-{name}' is already used on network {NETWORK}", f"project '{neighbour}'",
           "Choose another sandbox name", "a bridge of its own")
    assert instance_names(incus) == before  # the half-made sandbox is gone


def test_dropping_a_project_keeps_the_users_images(incus):
    """A project without images of its own lists the default project's (the user's): dropping it
    must not delete them. (It did: every test run ended by deleting the user's debian/12.)"""
    default = {image["fingerprint"] for image in json.loads(isolated.incus("image", "list", "--format", "json").stdout)}
    assert default, "the default project has no image to keep"
    name = f"{PROJECT}-d{secrets.token_hex(3)}"
    isolated.incus("project", "create", name, "-c", "features.images=false", "-c", "features.profiles=false")
    listed = {image["fingerprint"] for image in
              json.loads(isolated.incus("image", "list", "--project", name, "--format", "json").stdout)}
    assert listed == default  # what made the old drop delete them
    assert not isolated.drop(name, None)
    assert isolated.incus("project", "show", name, check=False).returncode != 0
    after = {image["fingerprint"] for image in json.loads(isolated.incus("image", "list", "--format", "json").stdout)}
    assert after == default


def test_a_second_run_on_the_same_project_stops_naming_the_first():
    """`make test` twice side by side: the second stops before it touches the project, naming
    the first (this run holds the lock); one with a project of its own is not stopped by it."""
    import os
    import subprocess
    import sys

    from ansible_fixtures import ROOT

    # a test file under tests/integration, so that its conftest (which takes the lock) loads
    probe = os.path.join(ROOT, "tests", "integration", f"test_zz_probe_{os.getpid()}.py")
    with open(probe, "w") as handle:
        handle.write("def test_nothing():\n    pass\n")
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", probe]
    try:
        second = subprocess.run(args, capture_output=True, text=True, timeout=300, check=False, cwd=ROOT,
                                env=dict(os.environ, PIXELS_TEST_PROJECT=PROJECT))
        said = second.stdout + second.stderr
        assert second.returncode == 3, said[-3000:]
        assert f"another test run uses Incus project {PROJECT!r} (pid {os.getpid()}" in said, said[-3000:]
        other = subprocess.run(args, capture_output=True, text=True, timeout=300, check=False, cwd=ROOT,
                               env=dict(os.environ, PIXELS_TEST_PROJECT=f"{PROJECT}-second"))
        assert other.returncode == 0, other.stdout[-3000:] + other.stderr[-3000:]
    finally:
        os.unlink(probe)
