"""Checks of values out of a sandbox: host keys, addresses, text for the terminal."""

import base64
import struct
import subprocess

import pytest

from ansible_collections.homelab.pixels.plugins.module_utils.untrusted import Untrusted, address, host_key, printable


def blob(kind, body=b"\x00" * 32):
    return base64.b64encode(struct.pack(">I", len(kind)) + kind.encode() + struct.pack(">I", len(body)) + body).decode()


def test_a_real_host_key(tmp_path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "root@box with spaces", "-f",
                    str(tmp_path / "k")], check=True)
    line = (tmp_path / "k.pub").read_text()
    kind, data = line.split()[:2]
    assert host_key(line) == f"{kind} {data}"  # the comment is dropped
    assert host_key(line, ("ssh-ed25519",)) == f"{kind} {data}"


@pytest.mark.parametrize("line, why", [
    ("", "not 'TYPE BASE64'"),
    ("ssh-ed25519", "not 'TYPE BASE64'"),
    ("ssh-ed25519 AAAA$(id>/tmp/x)", "not base64"),
    ("ssh-ed25519 " + blob("ssh-ed25519") + "\nHost *", "more than one line"),
    ("ssh-ed25519 " + blob("ssh-rsa"), "does not hold a ssh-ed25519 key"),
    ("ssh-ed25519 " + base64.b64encode(b"hello").decode(), "does not hold"),
    ("ssh-ed25519 QUFB", "too short"),
    ("ssh-ed25519 " + blob("ssh-ed25519")[:-2] + "@@", "not base64"),
    ("ssh-dss " + blob("ssh-dss"), "not a host key type"),
    ("\x1b]0;x\x07 " + blob("ssh-ed25519"), "not a host key type"),
    ("ssh-ed25519 " + "A" * 40000, "not base64"),
])
def test_not_host_keys(line, why):
    with pytest.raises(Untrusted, match=why.replace("$", r"\$").replace("(", r"\(").replace("*", r"\*")):
        host_key(line, ("ssh-ed25519",))


def test_messages_escape_what_they_quote():
    with pytest.raises(Untrusted) as caught:
        host_key("\x1b[2J\x1b]0;t\x07 AAAA")
    assert "\x1b" not in str(caught.value) and "\\x1b" in str(caught.value)


def test_addresses():
    assert address("10.123.0.5") == "10.123.0.5"
    assert address("fd42::1") == "fd42::1"
    assert address("box.lan", hostnames=True) == "box.lan"
    for bad in ("10.0.0.1$(id>/tmp/x)", "10.0.0.1 extra", "10.0.0.1\nHost *", "fe80::1%eth0", "", "box.lan", None):
        with pytest.raises(Untrusted):
            address(bad)
    for bad in ("-o", "a b", "a_b", "%h", "x" * 300, "a..b"):
        with pytest.raises(Untrusted):
            address(bad, hostnames=True)


def test_printable():
    text = ("ok\t1\n\x1b[31mred\x1b[0m \x1b]0;title\x07\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\ "
            "\x1bP+q\x1b\\ \x9b6n \x07\x08\x7f\r\nnext\x00")
    assert printable(text) == "ok\t1\nred link   \nnext"
    assert printable(b"\xff\x1b[1mbold") == "\ufffdbold"
