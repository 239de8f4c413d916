"""A clone's new SSH host keys and machine-id (key material and which files are written)."""

import re

import pytest
from cryptography.hazmat.primitives import serialization

from ansible_collections.homelab.pixels.plugins.module_utils import instance_identity
from ansible_collections.homelab.pixels.plugins.module_utils.errors import PixelsError
from ansible_collections.homelab.pixels.plugins.module_utils.instance_identity import (
    HostKeys,
    host_key_pair,
    renew_identity,
)


@pytest.mark.parametrize("kind, prefix", [("ed25519", b"ssh-ed25519 "), ("ecdsa", b"ecdsa-sha2-nistp256 "),
                                          ("rsa", b"ssh-rsa ")])
def test_host_key_pairs_are_openssh_keys_that_belong_together(kind, prefix):
    private, public = host_key_pair(kind, "root@px-box")
    assert private.startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")
    assert public.startswith(prefix) and public.endswith(b" root@px-box\n")
    key = serialization.load_ssh_private_key(private, password=None)
    derived = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    assert public.split()[:2] == derived.split()
    assert host_key_pair(kind, "x")[1].split()[1] != public.split()[1]


class StoppedCopy:
    """The backend's file API on a stopped copy: directories it has, files written."""

    def __init__(self, directories):
        self.directories = directories
        self.written = {}

    def list_directory(self, instance, path):
        return self.directories.get(path)

    def write_file(self, instance, path, data, uid=0, gid=0, mode=0o644):
        self.written[path] = (data, uid, gid, mode)


def test_only_the_key_types_the_copy_has_are_replaced():
    copy = StoppedCopy({"/etc": ["ssh", "machine-id", "hostname"],
                        "/etc/ssh": ["sshd_config", "ssh_host_ed25519_key", "ssh_host_ed25519_key.pub",
                                     "ssh_host_ecdsa_key", "ssh_host_ecdsa_key.pub"]})
    assert renew_identity(copy, "px-box", HostKeys("root@px-box")) == ["ed25519", "ecdsa"]
    assert sorted(copy.written) == ["/etc/machine-id", "/etc/ssh/ssh_host_ecdsa_key", "/etc/ssh/ssh_host_ecdsa_key.pub",
                                    "/etc/ssh/ssh_host_ed25519_key", "/etc/ssh/ssh_host_ed25519_key.pub"]
    assert copy.written["/etc/ssh/ssh_host_ed25519_key"][1:] == (0, 0, 0o600)
    assert copy.written["/etc/ssh/ssh_host_ed25519_key.pub"][1:] == (0, 0, 0o644)
    machine_id, _uid, _gid, mode = copy.written["/etc/machine-id"]
    assert re.fullmatch(rb"[0-9a-f]{32}\n", machine_id) and mode == 0o444


def test_a_copy_without_sshd_or_machine_id_gets_nothing_written():
    copy = StoppedCopy({"/etc": ["hostname"]})
    assert renew_identity(copy, "px-box", HostKeys("root@px-box")) == []
    assert copy.written == {}


def test_key_generation_failure_is_a_clear_error(monkeypatch):
    make = instance_identity.new_private_key

    def broken(kind):
        if kind == "rsa":
            raise ValueError("no entropy")
        return make(kind)

    monkeypatch.setattr(instance_identity, "new_private_key", broken)
    copy = StoppedCopy({"/etc": ["ssh"], "/etc/ssh": ["ssh_host_rsa_key"]})
    with pytest.raises(PixelsError, match="Could not make SSH host keys for the clone: no entropy"):
        renew_identity(copy, "px-box", HostKeys("root@px-box"))
    assert copy.written == {}
