"""Every bad input fails with a message naming the option and the fix, and changes nothing."""

import os
import socket
import subprocess
import sys

import pytest

import btrfs_quota
from conftest import in_sandbox, instance_names, snapshot_names


def failed(result, *needles):
    assert result.get("failed"), result
    message = result["msg"]
    for needle in needles:
        assert needle in message, message
    assert "Traceback" not in message
    return message


@pytest.mark.parametrize("args, needles", [
    ({"name": "bad_name"}, ["name='bad_name'", "not a valid sandbox name"]),
    ({"name": "x" * 61}, ["not a valid sandbox name", "60 characters"]),
    ({"name": "ok", "source": "a:b:c"}, ["source='a:b:c'", "box:label"]),
    ({"name": "ok", "source": "golden:"}, ["source='golden:'", "names no checkpoint"]),
    ({"name": "ok", "source": "nosuchbox:ready"}, ["nosuchbox", "does not exist"]),
    ({"name": "ok", "source": "golden:nosuchlabel"}, ["no checkpoint 'nosuchlabel'", "ready"]),
    ({"name": "ok", "memory": 10}, ["memory=10 is out of range", "at least 64"]),
    ({"name": "ok", "memory": 10 ** 9}, ["memory=1000000000 is out of range", "MiB"]),
    ({"name": "ok", "cpu": 0}, ["cpu=0 is out of range"]),
    ({"name": "ok", "cpu": 4096}, ["cpu=4096 is out of range", "CPUs"]),
    ({"name": "ok", "image": "debian/12", "source": "golden"}, ["mutually exclusive", "image", "source"]),
    ({"name": "ok", "state": "sideways"}, ["state", "one of"]),
    ({"name": "ok", "wait_timeout": 0}, ["wait_timeout"]),
    ({"name": "ok", "image": "no/such-image", "image_server": ""}, ["no/such-image", "image_server"]),
    ({"name": "ok", "image": "ubuntu/24.04", "image_server": "https://127.0.0.1:1"},
     ["image 'ubuntu/24.04' of https://127.0.0.1:1", "homelab.pixels.image"]),
])
def test_container_bad_input(ansible, incus, golden, cleanup, args, needles):
    before = instance_names(incus)
    failed(ansible.module("pixels_container", **args), *needles)
    assert instance_names(incus) == before


@pytest.mark.parametrize("args, needles", [
    ({"name": "golden", "label": "bad label"}, ["label='bad label'", "not a valid checkpoint label"]),
    ({"name": "golden", "state": "restored"}, ["needs label"]),
    ({"name": "golden", "state": "absent"}, ["needs label"]),
    ({"name": "golden", "label": "nope", "state": "restored"}, ["no checkpoint 'nope'", "ready"]),
    ({"name": "nosuchbox", "label": "x"}, ["nosuchbox", "does not exist"]),
])
def test_checkpoint_bad_input(ansible, incus, golden, args, needles):
    failed(ansible.module("pixels_checkpoint", **args), *needles)
    assert snapshot_names(incus, "px-golden") == ["ready"]


def test_missing_socket(ansible, incus):
    failed(ansible.module("pixels_container_info", socket="/nonexistent/unix.socket"),
           "/nonexistent/unix.socket does not exist", "PIXELS_INCUS_SOCKET")


def test_socket_that_is_not_a_socket(ansible, incus, tmp_path):
    path = tmp_path / "plain-file"
    path.write_text("")
    failed(ansible.module("pixels_container_info", socket=str(path)), "is not a unix socket")


def test_socket_nobody_listens_on(ansible, incus, tmp_path):
    path = str(tmp_path / "dead.socket")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(path)
    sock.close()  # bound but never listening: connections are refused
    failed(ansible.module("pixels_container_info", socket=path), "Nothing answers", "Incus daemon running")


def test_unreadable_socket(ansible, incus, tmp_path):
    """Without permission on the socket the message says how to get it.

    The tests run as root, so the module runs without the capabilities that let
    root ignore file modes, against a listening socket with mode 000.
    """
    path = str(tmp_path / "locked.socket")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(path)
    sock.listen()
    os.chmod(path, 0)
    try:
        result = ansible.adhoc("pixels_container_info", socket=path,
                               wrapper=["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"])
    finally:
        sock.close()
    failed(result, "No permission to use the Incus socket", "incus-admin")


def test_bad_config_file(ansible, incus, tmp_path):
    path = tmp_path / "config.toml"
    path.write_text("[incus\n")
    failed(ansible.module("pixels_container_info", config_file=str(path)), str(path), "not valid TOML")
    failed(ansible.module("pixels_container_info", config_file=str(tmp_path / "none.toml")),
           "config_file", "does not exist")


def test_config_file_fallback_is_used(ansible, incus, golden, tmp_path):
    path = tmp_path / "config.toml"
    path.write_text('[incus]\nproject = "no-such-project"\n')
    env_project = os.environ.pop("PIXELS_INCUS_PROJECT")
    try:
        failed(ansible.module("pixels_container_info", config_file=str(path)),
               "project='no-such-project' does not exist")
    finally:
        os.environ["PIXELS_INCUS_PROJECT"] = env_project


def test_missing_pylxd_names_library_and_interpreter(ansible, incus, tmp_path):
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    python = str(bare / "bin" / "python")
    inventory = tmp_path / "inventory.ini"
    inventory.write_text(f"localhost ansible_connection=local ansible_python_interpreter={python}\n")
    proc = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "ansible"), "localhost", "-i", str(inventory),
         "-m", "homelab.pixels.pixels_container_info"],
        capture_output=True, text=True, env=ansible.env(), timeout=120, check=False)
    results = ansible._parse(proc).results
    assert results, proc.stdout + proc.stderr
    failed(results[0][2], "pylxd", python)


def test_failed_create_removes_what_it_made(ansible, incus, golden, cleanup):
    """A clone that never gets an address is removed again; its source is untouched."""
    in_sandbox("px-golden", "mv /etc/network/interfaces /etc/network/interfaces.off")
    try:
        ansible.module("pixels_checkpoint", name="golden", label="nonet")
    finally:
        in_sandbox("px-golden", "mv /etc/network/interfaces.off /etc/network/interfaces")
    try:
        message = failed(ansible.module("pixels_container", name="nonet", source="golden:nonet", wait_timeout=5),
                         "no IPv4 address within 5 s", "removed again")
        assert "wait_timeout" in message
        assert not incus.instances.exists("px-nonet")
        golden_box = incus.instances.get("px-golden")
        assert golden_box.status == "Running"
        assert snapshot_names(incus, "px-golden") == ["nonet", "ready"]
    finally:
        ansible.module("pixels_checkpoint", name="golden", label="nonet", state="absent")


def host_role(ansible, extra_vars, wrapper=()):
    """incus_host on this machine; the failed tasks' messages and whether anything changed."""
    run = ansible.playbook("""
        - hosts: localhost
          gather_facts: false
          roles: [homelab.pixels.incus_host]
        """, extra_vars=extra_vars, wrapper=wrapper)
    assert run.rc != 0, run.stdout[-3000:]
    messages = [str(result.get("msg")) for _task, _host, result in run.results if result.get("failed")]
    changed = [task for task, _host, result in run.results if result.get("changed")]
    return messages, changed


def test_host_pool_driver_the_kernel_lacks(ansible, tmp_path):
    """incus_host with a driver whose kernel module this machine lacks (no ZFS on these kernels) stops
    before it installs or creates anything, naming the variable and the cause."""
    missing = next((name for name in ("zfs", "btrfs")
                    if subprocess.run(["sh", "-c", f"grep -qw {name} /proc/filesystems || "
                                                   f"find /lib/modules/$(uname -r) -name '{name}.ko*' | grep -q ."],
                                      check=False).returncode), None)
    if missing is None:
        pytest.skip("this kernel has both zfs and btrfs")
    pools = subprocess.run(["incus", "storage", "list", "--format", "csv", "-c", "n"], capture_output=True, text=True,
                           check=True).stdout
    messages, changed = host_role(ansible, {"incus_host_storage_driver": missing,
                                            "incus_host_storage_pool": "pixels-test-nozfs"})
    assert len(messages) == 1, messages
    assert f"incus_host_storage_driver is '{missing}'" in messages[0], messages
    assert f"has no {missing} module" in messages[0] and "Set incus_host_storage_driver to dir" in messages[0], messages
    assert not changed
    assert subprocess.run(["incus", "storage", "list", "--format", "csv", "-c", "n"], capture_output=True, text=True,
                          check=True).stdout == pools


# The playbook in a mount namespace of its own where every loop device, /dev/loop-control and
# /sys/block are covered: the real losetup then finds no free loop device, as on a host whose
# loop devices are all taken or that has none (a privileged container without them).
NO_LOOP_DEVICES = ["unshare", "--mount", "sh", "-c",
                   "mount -t tmpfs none /sys/block && for d in /dev/loop-control /dev/loop[0-9]*; do "
                   "mount --bind /dev/null $d || exit 1; done; exec \"$@\"", "sh"]


def test_host_without_a_free_loop_device(ansible):
    """btrfs asked for by name with no free loop device for the pool file: a stop naming the cause,
    the variable and the ways out, before anything is installed or created."""
    first = btrfs_quota.loop_pools_unavailable(loop_devices=False)
    if first:
        pytest.skip(f"{first}: that would be the first reason")
    proc = subprocess.run([*NO_LOOP_DEVICES, "losetup", "-f"], capture_output=True, text=True, check=False)
    assert proc.returncode != 0, f"the namespace still has a free loop device: {proc.stdout}"
    messages, changed = host_role(ansible, {"incus_host_storage_driver": "btrfs",
                                            "incus_host_storage_pool": "pixels-test-noloop"}, wrapper=NO_LOOP_DEVICES)
    assert len(messages) == 1, messages
    said = " ".join(messages[0].split())
    assert "incus_host_storage_driver is 'btrfs', but there is no free loop device" in said, said
    assert "Set incus_host_storage_driver to dir" in said and "incus_host_storage_source" in said, said
    assert not changed
    shown = subprocess.run(["incus", "storage", "show", "pixels-test-noloop"], capture_output=True, check=False)
    assert shown.returncode != 0  # not created


def test_host_admin_user_without_an_account(ansible):
    """incus_host_admin_users naming a user this host does not have: a stop naming the variable
    and the user; the role makes no account."""
    messages, changed = host_role(ansible, {"incus_host_admin_users": ["pixels-no-such-user"]})
    assert len(messages) == 1, messages
    said = " ".join(messages[0].split())
    assert "incus_host_admin_users names pixels-no-such-user, which has no account" in said, said
    assert not changed
    assert subprocess.run(["getent", "passwd", "pixels-no-such-user"], check=False).returncode != 0


def test_host_bridge_subnet_that_collides(ansible, incus):
    """A new bridge on a subnet this machine already routes (here: the tests' own bridge) stops
    before it is created, naming the variable."""
    from conftest import GATEWAY

    messages, changed = host_role(ansible, {"incus_host_network_name": "pxtcollide",
                                            "incus_host_network_ipv4": f"{GATEWAY}/24"})
    assert len(messages) == 1 and "overlaps a network this machine already uses" in messages[0], messages
    assert "choose another incus_host_network_ipv4" in messages[0], messages
    assert not changed
    shown = subprocess.run(["incus", "network", "show", "pxtcollide"], capture_output=True, check=False)
    assert shown.returncode != 0  # not created


def test_host_refuses_to_mix_with_zabbly(ansible, tmp_path):
    """Incus from Zabbly's repository and a package of Debian's still to install: a stop that says
    why and names incus_host_install, before apt runs."""
    source = "/etc/apt/sources.list.d/zz-pixels-test-zabbly.sources"
    with open(source, "x") as handle:  # disabled: apt never reads from it
        handle.write("Enabled: no\nTypes: deb\nURIs: https://pkgs.zabbly.com/incus/stable\n"
                     "Suites: bookworm\nComponents: main\n")
    try:
        messages, changed = host_role(ansible, {"incus_host_packages": ["incus", "pixels-test-not-installed"]})
    finally:
        os.unlink(source)
    assert len(messages) == 1 and "from another source" in messages[0], messages
    assert "zz-pixels-test-zabbly.sources" in messages[0] and "incus_host_install=false" in messages[0], messages
    assert not changed


def test_site_key_pair_without_ssh_keygen(ansible, tmp_path):
    """No key in ~/.ssh and no ssh-keygen on the controller: the site role stops naming what to
    install or set, and makes nothing (not even the key pair's directory)."""
    bin_dir = tmp_path / "bin"  # this machine's commands but ssh-keygen
    bin_dir.mkdir()
    for directory in ("/usr/local/bin", "/usr/bin", "/bin"):
        for entry in os.scandir(directory):
            if entry.name != "ssh-keygen" and not os.path.lexists(bin_dir / entry.name):
                (bin_dir / entry.name).symlink_to(entry.path)
    home = tmp_path / "home"
    home.mkdir()
    run = ansible.playbook("""
        - hosts: localhost
          gather_facts: false
          tasks:
            - ansible.builtin.include_role:
                name: homelab.pixels.site
                tasks_from: ssh_key.yml
        """, env={"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
                  "PATH": f"{os.path.dirname(sys.executable)}:{bin_dir}"})
    assert run.rc != 0, run.stdout[-3000:]
    messages = [str(result.get("msg")) for _task, _host, result in run.results if result.get("failed")]
    assert len(messages) == 1 and "no ssh-keygen on the controller" in " ".join(messages[0].split()), messages
    assert "apt-get install openssh-client" in messages[0] and "pixels_ssh_keys" in messages[0], messages
    assert not (home / ".config" / "pixels").exists()
