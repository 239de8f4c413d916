# -*- coding: utf-8 -*-
# Copyright: (c) 2026, homelab.pixels contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Checks for values that come out of a sandbox before the controller uses them.

Root inside a sandbox is not trusted: whatever a command there prints may be forged. A value
that ends up in the controller's configuration (an SSH host key, an address) must parse as
what it claims to be, and text shown to the operator (log tails) must not carry terminal
control sequences. Standard library only: filters, modules and the connection use it.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
import struct

# SSH public key algorithms a host key can have (the wire name heads the key blob).
HOST_KEY_TYPES = (
    "ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com", "ssh-ed448",
)
_BASE64 = re.compile(r"^[A-Za-z0-9+/]+={0,2}$")
# A key blob larger than this is not a host key (an RSA-16384 key is about 2 KiB).
_MAX_BLOB = 16384
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")

# ECMA-48 sequences (CSI, OSC/DCS/APC/PM/SOS strings, two-byte escapes) and C0/C1 control
# characters but tab and newline: what a terminal would act on.
_ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI ... final byte
    r"|\x1b[\]PX^_][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC, DCS, SOS, PM, APC up to BEL or ST
    r"|\x1b[ -/]*[0-~]"  # other escapes
    r"|\x9b[0-?]*[ -/]*[@-~]"  # 8-bit CSI
    r"|[\x00-\x08\x0b-\x1f\x7f-\x9f]"  # the remaining control characters (tab and newline stay)
)


class Untrusted(ValueError):
    """A value from a sandbox that is not what it should be; the message says why."""


def shown(value, limit=120):
    """``value`` for a message: quoted, control characters escaped, cut at ``limit``."""
    text = value if isinstance(value, str) else repr(value)
    cut = text[:limit]
    return ascii(cut) + (f" (and {len(text) - limit} more characters)" if len(text) > limit else "")


def host_key(value, types=HOST_KEY_TYPES):
    """``TYPE BASE64`` of an SSH public host key line (``TYPE BASE64 [COMMENT]``).

    Raises Untrusted unless TYPE is one of ``types`` and BASE64 decodes strictly to a key blob
    whose own type string is TYPE: so the result is one line of two printable words.
    """
    if not isinstance(value, str):
        raise Untrusted(f"{shown(value)} is not text")
    if "\n" in value.strip("\n") or "\r" in value or "\0" in value:
        raise Untrusted(f"{shown(value)} is more than one line")
    fields = value.strip().split()
    if len(fields) < 2:
        raise Untrusted(f"{shown(value)} is not 'TYPE BASE64' of an SSH key")
    kind, data = fields[0], fields[1]
    if kind not in types:
        raise Untrusted(f"{shown(kind)} is not a host key type ({', '.join(types)})")
    if len(data) > _MAX_BLOB * 4 // 3 + 4 or not _BASE64.match(data):
        raise Untrusted(f"{shown(data)} is not base64 of a key")
    try:
        blob = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise Untrusted(f"{shown(data)} is not base64 of a key")
    if len(blob) < 4:
        raise Untrusted(f"the key {shown(data)} is too short")
    (length,) = struct.unpack(">I", blob[:4])
    if blob[4:4 + length] != kind.encode("ascii") or len(blob) <= 4 + length:
        raise Untrusted(f"the key data does not hold a {kind} key")
    return f"{kind} {data}"


def address(value, hostnames=False):
    """``value`` as an address for ssh's HostName: an IPv4 or IPv6 address (normalised), or
    with ``hostnames`` also a DNS name. Raises Untrusted otherwise."""
    if not isinstance(value, str):
        raise Untrusted(f"{shown(value)} is not text")
    try:
        if "%" not in value:  # no IPv6 zone: "%" starts a token in ssh's configuration
            return str(ipaddress.ip_address(value))
    except ValueError:
        pass
    if hostnames and len(value) <= 253 and _HOSTNAME.match(value):
        return value
    raise Untrusted(f"{shown(value)} is not an IP address" + (" or host name" if hostnames else ""))


def printable(text):
    """``text`` without terminal escape sequences and control characters (tab and newline stay)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    return _ESCAPES.sub("", text.replace("\r\n", "\n"))
