# -*- coding: utf-8 -*-
# Copyright: (c) 2026, homelab.pixels contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The egress policy's second layer, outside the sandbox, which root inside cannot lift.

Either an Incus network ACL on the sandbox's NICs (any daemon, local or remote, when the host
kernel can enforce it) or, when the controller is the Incus host, nftables rules in the
host's forward and input paths keyed by the sandbox's addresses. Which one applies is found
by trying: Incus refuses to attach an ACL that its kernel cannot enforce.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import json
import os
import re
import shutil
import stat
import subprocess
import time

from ansible_collections.homelab.pixels.plugins.module_utils.errors import PixelsError

LAYERS = ("auto", "acl", "nftables", "none")
HOST_TABLE = "pixels_egress"
META_HOST = "user.pixels.egress.host"  # which layer is active, and the digest of what it enforces
ACL_KEYS = ("security.acls", "security.acls.default.egress.action", "security.acls.default.egress.logged",
            "security.acls.default.ingress.action")
_TABLE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,31}$")


class LayerUnavailable(Exception):
    """This kind of host layer cannot be used here (the reason is the message)."""


def check_table(name, option="host_table"):
    if not isinstance(name, str) or not _TABLE_RE.match(name):
        raise PixelsError(f"{option}={name!r} is not a valid nftables table name: letters, digits and '_', "
                          f"starting with a letter, at most 32 characters.")
    return name


def allowed_destinations(view):
    """(IPv4, IPv6) destinations of a policy view: its CIDRs and resolved addresses, sorted."""
    networks = {ipaddress.ip_network(c) for c in view.get("cidrs", [])}
    networks |= {ipaddress.ip_network(a) for a in view.get("addresses", [])}
    v4 = sorted((n for n in networks if n.version == 4))
    v6 = sorted((n for n in networks if n.version == 6))
    return [_text(n) for n in v4], [_text(n) for n in v6]


BROADCAST4 = "255.255.255.255"


def dhcp_destinations(view):
    """Where a sandbox's DHCPv4 may go: the broadcast address and its network's DHCP server(s)."""
    servers = {str(ipaddress.ip_address(a)) for a in view.get("dhcp4") or [] if ipaddress.ip_address(a).version == 4}
    return [BROADCAST4] + sorted(servers - {BROADCAST4}, key=ipaddress.ip_address)


def _text(network):
    """An address without /32 or /128, a network as CIDR."""
    return str(network.network_address) if network.prefixlen == network.max_prefixlen else str(network)


def digest(data):
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


# -- Incus network ACLs ------------------------------------------------------------------

def acl_name(instance):
    name = f"{instance}-egress"
    if len(name) > 63:
        name = name[:46] + "-" + hashlib.sha256(instance.encode()).hexdigest()[:8] + "-egress"
    return name


def render_acl(instance, view):
    """The body of the instance's network ACL (POST /1.0/network-acls): egress allow rules only,
    the default egress action on the NIC drops everything else."""
    v4, v6 = allowed_destinations(view)
    resolvers = sorted(view.get("resolvers") or [])
    egress = []
    if resolvers:
        for protocol in ("udp", "tcp"):
            egress.append({"action": "allow", "state": "enabled", "protocol": protocol, "destination": ",".join(resolvers),
                           "destination_port": "53", "description": "DNS to the sandbox's resolvers"})
    egress.append({"action": "allow", "state": "enabled", "protocol": "udp", "destination": ",".join(dhcp_destinations(view)),
                   "source_port": "68", "destination_port": "67", "description": "DHCPv4 to the network's server"})
    if v4 or v6:
        egress.append({"action": "allow", "state": "enabled", "destination": ",".join(v4 + v6),
                       "description": f"egress policy {view['mode']}"})
    return {"name": acl_name(instance), "description": f"homelab.pixels egress policy of {instance}",
            "config": {}, "egress": egress, "ingress": []}


def nic_acl_config(instance):
    """The NIC keys that attach the ACL and drop the rest of the sandbox's egress."""
    return {"security.acls": acl_name(instance), "security.acls.default.egress.action": "drop",
            "security.acls.default.egress.logged": "true", "security.acls.default.ingress.action": "allow"}


def _nic_devices(data):
    """{name: device} of the instance's managed-network NICs, with profile devices expanded."""
    expanded = data.get("expanded_devices") or {}
    return {name: dev for name, dev in expanded.items() if dev.get("type") == "nic" and dev.get("network")}


def apply_acl(backend, instance, view):
    """Create or update the ACL and attach it to every managed NIC; raise LayerUnavailable when
    Incus or its kernel cannot (the ACL is then removed again)."""
    api = backend.client.api
    extensions = backend.client.host_info.get("api_extensions", []) if hasattr(backend.client, "host_info") else []
    if "network_acl" not in extensions:
        raise LayerUnavailable("this Incus has no network ACLs (API extension network_acl)")
    body = render_acl(instance, view)
    name = body["name"]
    acls = api["network-acls"]
    try:
        try:
            acls[name].get()
            acls[name].put(json={k: body[k] for k in ("description", "config", "egress", "ingress")})
        except Exception as exc:  # pylxd NotFound; anything else resurfaces on post
            if "not found" not in str(exc).lower():
                raise
            acls.post(json=body)
        data = api.instances[instance].get().json()["metadata"]
        nics = _nic_devices(data)
        if not nics:
            raise LayerUnavailable(f"{instance} has no NIC on a managed Incus network to attach an ACL to")
        devices = dict(data.get("devices") or {})
        for nic, dev in nics.items():
            devices[nic] = dict(dev, **nic_acl_config(instance))
        response = api.instances[instance].patch(json={"devices": devices})
        backend._wait(response)  # pylint: disable=protected-access
    except LayerUnavailable:
        remove_acl(backend, instance)
        raise
    except Exception as exc:
        remove_acl(backend, instance)
        raise LayerUnavailable(f"Incus refused the network ACL on {instance}'s NIC: {exc}")


def remove_acl(backend, instance):
    """Detach the ACL from the NICs (dropping overrides that only carried it) and delete it."""
    api = backend.client.api
    name = acl_name(instance)
    try:
        data = api.instances[instance].get().json()["metadata"]
        devices = dict(data.get("devices") or {})
        profile_devices = {}
        for profile in data.get("profiles") or []:
            profile_devices.update(api.profiles[profile].get().json()["metadata"].get("devices") or {})
        touched = False
        for nic, dev in list(devices.items()):
            if dev.get("security.acls") != name:
                continue
            bare = {k: v for k, v in dev.items() if k not in ACL_KEYS}
            if profile_devices.get(nic) == bare:
                del devices[nic]
            else:
                devices[nic] = bare
            touched = True
        if touched:
            backend._wait(api.instances[instance].patch(json={"devices": devices}))  # pylint: disable=protected-access
    except Exception:  # the instance may be gone; the ACL is what matters below
        pass
    try:
        api["network-acls"][name].delete()
    except Exception:
        pass


# -- host nftables (the controller is the Incus host) ----------------------------------------

def _safe(name):
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


def chain_prefix(project):
    return f"sb_{_safe(project)}__"


def chain_name(instance, project="default"):
    """The sandbox's chain; the project is in the name so that a table shared by projects can
    tell whose sandboxes are gone."""
    return chain_prefix(project) + _safe(instance)


def nft_available():
    """None when host nftables can be used from here, else the reason."""
    if os.geteuid() != 0:
        return "the controller does not run as root (host nftables need it)"
    if not shutil.which("nft"):
        return "nft is not installed on the Incus host"
    return None


def _nft(args, stdin=None):
    proc = subprocess.run(["nft", *args], input=stdin, capture_output=True, text=True, check=False, timeout=60)
    return proc.returncode, proc.stdout, proc.stderr


def read_host_table(table):
    """{exists, chains, src4: {addr: chain}, src6: {...}} from ``nft -j list table``."""
    rc, out, _err = _nft(["-j", "list", "table", "inet", table])
    state = {"exists": rc == 0, "chains": set(), "src4": {}, "src6": {}}
    if rc != 0:
        return state
    try:
        items = json.loads(out).get("nftables", [])
    except ValueError:
        return state
    for item in items:
        if "chain" in item:
            state["chains"].add(item["chain"]["name"])
        elif "map" in item and item["map"]["name"] in ("src4", "src6"):
            for elem in item["map"].get("elem") or []:
                key, verdict = elem if isinstance(elem, list) else (None, None)
                target = (verdict or {}).get("jump", {}).get("target") if isinstance(verdict, dict) else None
                if isinstance(key, str) and target:
                    state[item["map"]["name"]][key] = target
    return state


def render_host_rules(table, instance, sandbox_ipv4, sandbox_ipv6, view, current, project="default", live=None):
    """One nft transaction that (re)writes this sandbox's chain and its keys in the table.

    ``view`` None removes the sandbox's rules instead. ``current`` is read_host_table's answer.
    ``live``: the instances that exist in ``project``; chains of its other instances (deleted
    sandboxes, whose addresses DHCP may hand to new ones) are removed with their keys.
    """
    chain = chain_name(instance, project)
    gone = set()
    if live is not None:
        alive = {chain_name(name, project) for name in live} | {chain}
        gone = {c for c in current["chains"] if c.startswith(chain_prefix(project)) and c not in alive}
    lines = []
    if view is not None:
        lines += [
            f"add table inet {table}",
            f"add map inet {table} src4 {{ type ipv4_addr : verdict; }}",
            f"add map inet {table} src6 {{ type ipv6_addr : verdict; }}",
            f"add chain inet {table} from_sandboxes_fwd {{ type filter hook forward priority -10; policy accept; }}",
            f"add chain inet {table} from_sandboxes_in {{ type filter hook input priority -10; policy accept; }}",
        ]
        if not current["exists"]:
            for base in ("from_sandboxes_fwd", "from_sandboxes_in"):
                lines += [f"add rule inet {table} {base} ip saddr vmap @src4",
                          f"add rule inet {table} {base} ip6 saddr vmap @src6"]
    mine = set(sandbox_ipv4) | set(sandbox_ipv6)
    remaining = set()
    for family in ("src4", "src6"):
        # Ours, and the sandbox's addresses keyed to a chain of a sandbox that had them before.
        old = sorted(addr for addr, target in current[family].items()
                     if target == chain or target in gone or addr in mine)
        if old:
            lines.append(f"delete element inet {table} {family} {{ {', '.join(old)} }}")
        remaining |= {target for addr, target in current[family].items() if addr not in old}
    # Chains no address leads to any more (their sandbox is gone or was readdressed).
    for orphan in sorted(c for c in current["chains"] if c.startswith("sb_") and c != chain and c not in remaining):
        lines += [f"flush chain inet {table} {orphan}", f"delete chain inet {table} {orphan}"]
    if view is None:
        if chain in current["chains"]:
            lines += [f"flush chain inet {table} {chain}", f"delete chain inet {table} {chain}"]
        return "".join(line + "\n" for line in lines)
    v4, v6 = allowed_destinations(view)
    resolvers4 = [r for r in view.get("resolvers") or [] if ":" not in r]
    resolvers6 = [r for r in view.get("resolvers") or [] if ":" in r]
    lines += [f"add chain inet {table} {chain}", f"flush chain inet {table} {chain}",
              f"add rule inet {table} {chain} ct state established,related accept",
              f"add rule inet {table} {chain} ip daddr {{ {', '.join(dhcp_destinations(view))} }} udp sport 68 udp dport 67 accept"]
    if resolvers4:
        lines.append(f"add rule inet {table} {chain} ip daddr {{ {', '.join(resolvers4)} }} meta l4proto {{ tcp, udp }} th dport 53 accept")
    if resolvers6:
        lines.append(f"add rule inet {table} {chain} ip6 daddr {{ {', '.join(resolvers6)} }} meta l4proto {{ tcp, udp }} th dport 53 accept")
    if v4:
        lines.append(f"add rule inet {table} {chain} ip daddr {{ {', '.join(v4)} }} accept")
    if v6:
        lines.append(f"add rule inet {table} {chain} ip6 daddr {{ {', '.join(v6)} }} accept")
    lines.append(f"add rule inet {table} {chain} counter drop")
    if sandbox_ipv4:
        lines.append(f"add element inet {table} src4 {{ {', '.join(f'{a} : jump {chain}' for a in sorted(sandbox_ipv4))} }}")
    if sandbox_ipv6:
        lines.append(f"add element inet {table} src6 {{ {', '.join(f'{a} : jump {chain}' for a in sorted(sandbox_ipv6))} }}")
    return "".join(line + "\n" for line in lines)


def host_rules_current(table, instance, sandbox_ipv4, sandbox_ipv6, current, project="default"):
    """Whether the table still holds this sandbox's chain keyed by exactly its addresses."""
    chain = chain_name(instance, project)
    keyed = {a for family in ("src4", "src6") for a, target in current[family].items() if target == chain}
    return chain in current["chains"] and keyed == set(sandbox_ipv4) | set(sandbox_ipv6)


def apply_host_rules(table, script):
    rc, out, err = _nft(["-f", "-"], stdin=script)
    if rc != 0:
        raise PixelsError(f"Loading the host nftables rules (table inet {table}) failed: {err.strip() or out.strip()}",
                          rules=script)


def drop_empty_table(table):
    """Delete the table when no sandbox chain is left in it."""
    current = read_host_table(table)
    if current["exists"] and not [c for c in current["chains"] if c.startswith("sb_")]:
        _nft(["delete", "table", "inet", table])


# Root's own directory for the host's locks: /run/lock is world-writable, and any local user
# could pre-create or hold (flock needs only a read handle) a lock there and stall every task.
LOCK_DIR = "/run/pixels-egress"
LOCK_TIMEOUT = 60.0  # seconds a task waits for another one's host rules


def lock_dir(path=LOCK_DIR):
    """The locks' directory: made 0700, or checked to be root's own directory (not a link)."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        raise PixelsError(f"{path} on the Incus host is not a directory of its own user (uid {info.st_uid}, "
                          f"mode {stat.filemode(info.st_mode)}): someone else made it; remove it and run the task again.")
    if stat.S_IMODE(info.st_mode) & 0o077:
        os.chmod(path, 0o700)
    return path


def lock_path(table):
    return os.path.join(LOCK_DIR, f"host-{table}.lock")


def lock_holders(fd):
    """PIDs (with their command) holding an flock or POSIX lock on the file open as ``fd``, from /proc/locks."""
    inode = os.fstat(fd).st_ino
    holders = []
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as handle:
            for line in handle:
                fields = line.split()
                if len(fields) < 6 or fields[1] == "->":  # "->": a waiter, not a holder
                    continue
                if fields[5].rsplit(":", 1)[-1] == str(inode):
                    holders.append(fields[4])
    except OSError:
        return "unknown (no /proc/locks)"
    described = []
    for pid in dict.fromkeys(holders):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                command = handle.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
        except OSError:
            command = ""
        described.append(f"PID {pid}" + (f" ({command[:160]})" if command else ""))
    return ", ".join(described) or "unknown (the holder ended meanwhile?)"


@contextlib.contextmanager
def table_lock(table, timeout=LOCK_TIMEOUT):
    """Holds the host's lock on ``table``: parallel tasks (forks, other playbooks) would render
    from the same read, add the base rules twice and delete a gone chain twice, which nft refuses.
    Waits at most ``timeout`` seconds, then fails naming the holder."""
    lock_dir()
    path = lock_path(table)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise PixelsError(f"The host's egress rules (table inet {table}) stayed locked for {timeout:g} s "
                                      f"by {lock_holders(fd)} (lock {path}): another task is updating them, or "
                                      f"hangs; wait for it or end that process, then run the task again.")
                time.sleep(0.1)
        yield
    finally:
        os.close(fd)


def update_host_rules(table, instance, sandbox_ipv4, sandbox_ipv6, view, project="default", live=None,
                      lock_timeout=LOCK_TIMEOUT):
    """Read, render and load under the table's lock. ``view`` None removes the sandbox's rules
    (and the table once no sandbox is left); then False when it had none."""
    with table_lock(table, lock_timeout):
        current = read_host_table(table)
        if view is None and chain_name(instance, project) not in current["chains"]:
            return False
        apply_host_rules(table, render_host_rules(table, instance, sandbox_ipv4, sandbox_ipv6, view, current,
                                                  project, live))
        if view is None:
            drop_empty_table(table)
        return True
