# -*- coding: utf-8 -*-
# Copyright: (c) 2026, homelab.pixels contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A clone's own identity: SSH host keys and machine-id, written before it first starts.

A copy of a checkpoint carries its source's SSH host keys, so every sandbox cloned from a base
would present the same key (one leaked key then impersonates them all, and pinned known_hosts
entries cannot tell them apart), and its machine-id, which systemd-networkd turns into the
DHCP client identifier (clones asking for the same lease). Both are replaced in the stopped
copy, through the backend's file API: no race with sshd, nothing to run inside the sandbox.
Only the key types the copy has are replaced; the keys are made on the controller.
"""

from __future__ import annotations

import secrets
import threading

try:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
    HAS_CRYPTOGRAPHY = True
except ImportError:  # reported when a clone needs keys
    HAS_CRYPTOGRAPHY = False

from ansible_collections.homelab.pixels.plugins.module_utils.errors import PixelsError

SSH_DIR = "/etc/ssh"
HOST_KEY_TYPES = ("ed25519", "ecdsa", "rsa")


def new_private_key(kind):
    """A new host key of ``kind``, as ssh-keygen -A makes them."""
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if kind == "ecdsa":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=3072)


def host_key_pair(kind, comment):
    """(private key in OpenSSH format, public key line) of a new host key."""
    key = new_private_key(kind)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return private, public + b" " + comment.encode("utf-8") + b"\n"


class HostKeys:
    """New host keys of every type, made in a thread while the copy is being made (an RSA key
    takes up to half a second)."""

    def __init__(self, comment):
        if not HAS_CRYPTOGRAPHY:
            raise PixelsError("Cloning a sandbox needs the cryptography package (a dependency of pylxd) in the "
                              "Python that runs the module: pip install -r requirements.txt there.")
        self._keys = {}
        self._error = None
        self._thread = threading.Thread(target=self._make, args=(comment,), daemon=True)
        self._thread.start()

    def _make(self, comment):
        try:
            for kind in HOST_KEY_TYPES:
                self._keys[kind] = host_key_pair(kind, comment)
        except Exception as exc:  # pylint: disable=broad-except
            self._error = exc

    def get(self):
        """{type: (private, public)} once they are all made."""
        self._thread.join()
        if self._error is not None:
            raise PixelsError(f"Could not make SSH host keys for the clone: {self._error}")
        return self._keys


def renew_identity(io, instance, host_keys):
    """Give the stopped copy ``instance`` its own machine-id and SSH host keys.

    ``io`` is the backend (list_directory and write_file on a stopped instance); ``host_keys``
    a HostKeys. Returns the host key types replaced.
    """
    etc = io.list_directory(instance, "/etc") or []
    if "machine-id" in etc:
        io.write_file(instance, "/etc/machine-id", (secrets.token_hex(16) + "\n").encode("ascii"), mode=0o444)
    present = (io.list_directory(instance, SSH_DIR) or []) if "ssh" in etc else []
    replaced = [kind for kind in HOST_KEY_TYPES if f"ssh_host_{kind}_key" in present]
    if replaced:
        keys = host_keys.get()
        for kind in replaced:
            private, public = keys[kind]
            path = f"{SSH_DIR}/ssh_host_{kind}_key"
            io.write_file(instance, path, private, mode=0o600)
            io.write_file(instance, path + ".pub", public, mode=0o644)
    return replaced
