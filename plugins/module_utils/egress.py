# -*- coding: utf-8 -*-
# Copyright: (c) 2026, homelab.pixels contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Egress policy of a sandbox: validation, the agent preset, merging, rendering, applying.

The controller renders every file (nftables ruleset, sudoers, safe-apt, the refresh script,
systemd units) from the jinja2 templates in egress_templates, ships them into the sandbox as
one tar stream and runs one installer there. Domains are resolved inside the sandbox (its own
resolvers, as its programs see them) by the refresh script, which a timer runs again later.
"""

from __future__ import annotations

import hashlib
import io
import ipaddress
import json
import re
import tarfile
import time

try:
    import jinja2
    HAS_JINJA2 = True
except ImportError:  # reported by the module
    HAS_JINJA2 = False

from ansible_collections.homelab.pixels.plugins.module_utils.errors import PixelsError
from ansible_collections.homelab.pixels.plugins.module_utils import egress_templates as templates
from ansible_collections.homelab.pixels.plugins.module_utils.untrusted import printable

MODES = ("unrestricted", "agent", "allowlist")
RESTRICTED = ("agent", "allowlist")

# The agent preset: what coding agents need (model APIs, package registries, forges, tool
# installers, Debian/Ubuntu mirrors). Overridable with the modules' `preset` option.
AGENT_DOMAINS = (
    "api.anthropic.com",
    "api.openai.com",
    "generativelanguage.googleapis.com",
    "registry.npmjs.org",
    "pypi.org",
    "files.pythonhosted.org",
    "crates.io",
    "static.crates.io",
    "proxy.golang.org",
    "sum.golang.org",
    "github.com",
    "api.github.com",
    "gitlab.com",
    "objects.githubusercontent.com",
    "raw.githubusercontent.com",
    "codeload.github.com",
    "github-releases.githubusercontent.com",
    "tmaproduction.blob.core.windows.net",
    "tuf-repo-cdn.sigstore.dev",
    "mise.run",
    "mise.jdx.dev",
    "nodejs.org",
    "archive.ubuntu.com",
    "security.ubuntu.com",
    "deb.debian.org",
    "security.debian.org",
)
AGENT_CIDRS = (
    "142.250.0.0/15",   # Google (Gemini API front ends)
    "172.217.0.0/16",
    "216.58.0.0/16",
    "34.117.0.0/16",    # Google Cloud load balancers
    "185.199.108.0/22",  # GitHub content (githubusercontent.com)
    "20.209.0.0/16",    # Azure blob storage (GitHub release assets)
)
AGENT_PRESET = AGENT_DOMAINS + AGENT_CIDRS

# Paths inside the sandbox.
EGRESS_DIR = "/etc/pixels/egress"
MODE_FILE = EGRESS_DIR + "/mode"
POLICY_FILE = EGRESS_DIR + "/policy.json"
STATE_FILE = EGRESS_DIR + "/state.json"
MANIFEST_FILE = EGRESS_DIR + "/manifest"
SUDOERS_FILE = "/etc/sudoers.d/pixel"
TABLE = "pixels_egress"
RESOLVE_TIMEOUT = 3.0  # seconds per lookup while a task runs (the module's default)
# Root's own directory (0700) for the lock the installer, the refresh and safe-apt share, the
# links a failed load took down, and temporary files: nothing pixel can open gates the policy.
STATE_DIR = "/run/pixels-egress"
LOCK_TIMEOUT = 60.0  # seconds any of them waits for another one's lock (the module's default)
BROADCAST4 = "255.255.255.255"

_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_DOMAIN_RE = re.compile(rf"^(?:{_LABEL}\.)+(?:[a-z][a-z0-9-]{{0,62}}(?<!-))$")
_USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")


def check_mode(mode):
    if mode not in MODES:
        raise PixelsError(f"mode={mode!r} is not one of {', '.join(MODES)}: use unrestricted (no filter), "
                          f"agent (the agent preset plus allow) or allowlist (only what you allow).")
    return mode


def check_user(user):
    if not isinstance(user, str) or not _USER_RE.match(user) or user == "root":
        raise PixelsError(f"user={user!r} is not a valid unprivileged user name such as 'pixel'.")
    return user


def parse_entry(entry, option):
    """A domain (lower-cased) or a network (normalised CIDR); raise naming ``option`` otherwise."""
    if not isinstance(entry, str) or not entry.strip():
        raise PixelsError(f"{option} has an empty or non-string entry {entry!r}: give domains such as "
                          f"'pypi.org' or CIDRs such as '10.0.0.0/8'.")
    text = entry.strip().lower().rstrip(".")
    looks_numeric = bool(re.match(r"^[0-9./]+$", text)) or ":" in text
    if looks_numeric:
        try:
            network = ipaddress.ip_network(text, strict=True)
        except ValueError as exc:
            hint = ""
            try:
                hint = f" (did you mean {ipaddress.ip_network(text, strict=False)}?)"
            except ValueError:
                pass
            raise PixelsError(f"{option} entry {entry!r} is not a valid address or CIDR: {exc}{hint}.")
        return "cidr", str(network)
    if text.startswith("*."):
        raise PixelsError(f"{option} entry {entry!r}: wildcards cannot be resolved to addresses; list each "
                          f"host name, or give the provider's CIDR.")
    if len(text) > 253 or not _DOMAIN_RE.match(text):
        raise PixelsError(f"{option} entry {entry!r} is not a valid domain name (letters, digits, hyphens and "
                          f"dots, such as 'api.github.com') or CIDR (such as '192.0.2.0/24').")
    return "domain", text


def parse_entries(entries, option):
    """(domains, cidrs): sorted, without duplicates."""
    if entries is None:
        return [], []
    if isinstance(entries, str):
        entries = [entries]
    domains, cidrs = set(), set()
    for entry in entries:
        kind, value = parse_entry(entry, option)
        (domains if kind == "domain" else cidrs).add(value)
    return sorted(domains), sort_cidrs(cidrs)


def sort_cidrs(cidrs):
    networks = [ipaddress.ip_network(c) for c in cidrs]
    return [str(n) for n in sorted(networks, key=lambda n: (n.version, n))]


def desired_policy(current, mode, allow=None, deny=None, domains=None, preset=None):
    """The policy after a task: {mode, domains, cidrs}.

    ``current`` is the recorded policy (or None). The list starts from ``domains`` when given,
    else the current list when the mode stays the same, else the agent preset (agent) or
    nothing (allowlist); then ``allow`` is added and ``deny`` removed. Denying an entry that is
    not in the list is an error, so a typo does not pass silently.
    """
    check_mode(mode)
    if mode == "unrestricted":
        for option, value in (("allow", allow), ("deny", deny), ("domains", domains)):
            if value:
                raise PixelsError(f"{option} has no effect with mode=unrestricted: drop it, or use mode=agent "
                                  f"or mode=allowlist.")
        return {"mode": "unrestricted", "domains": [], "cidrs": []}
    if domains is not None:
        base_domains, base_cidrs = parse_entries(domains, "domains")
    elif current and current.get("mode") == mode:
        base_domains, base_cidrs = list(current.get("domains", [])), list(current.get("cidrs", []))
    elif mode == "agent":
        base_domains, base_cidrs = parse_entries(AGENT_PRESET if preset is None else preset, "preset")
    else:
        base_domains, base_cidrs = [], []
    allow_domains, allow_cidrs = parse_entries(allow, "allow")
    deny_domains, deny_cidrs = parse_entries(deny, "deny")
    result_domains = set(base_domains) | set(allow_domains)
    result_cidrs = set(base_cidrs) | set(allow_cidrs)
    missing = [d for d in deny_domains if d not in result_domains] + [c for c in deny_cidrs if c not in result_cidrs]
    if missing:
        raise PixelsError(f"deny: {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not in the "
                          f"{mode} policy, nothing to remove (check the spelling; the policy has "
                          f"{len(result_domains)} domains and {len(result_cidrs)} CIDRs, see pixels_egress_info).")
    return {"mode": mode, "domains": sorted(result_domains - set(deny_domains)),
            "cidrs": sort_cidrs(result_cidrs - set(deny_cidrs))}


def split_cidrs(cidrs):
    v4 = [c for c in cidrs if ipaddress.ip_network(c).version == 4]
    v6 = [c for c in cidrs if ipaddress.ip_network(c).version == 6]
    return v4, v6


# -- rendering ----------------------------------------------------------------------------

def _environment():
    if not HAS_JINJA2:
        raise PixelsError("jinja2 is needed on the controller to render the egress rules: pip install jinja2.")
    return jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                              trim_blocks=True, lstrip_blocks=True, autoescape=False)


def render(template, **values):
    return _environment().from_string(template).render(**values)


def dhcp_destinations(servers):
    """DHCPv4 may go to the broadcast address and the network's DHCP server(s), nowhere else."""
    found = {str(ipaddress.ip_address(a)) for a in servers or () if ipaddress.ip_address(a).version == 4}
    return [BROADCAST4] + sorted(found - {BROADCAST4}, key=ipaddress.ip_address)


def render_files(policy, user="pixel", refresh_interval=300, refresh_timeout=5, dhcp4=(), lock_timeout=LOCK_TIMEOUT):
    """{path inside the sandbox: (content, mode)} for a policy. ``dhcp4``: the addresses of the
    DHCP servers of the sandbox's networks (the bridges' own addresses)."""
    values = dict(table=TABLE, egress_dir=EGRESS_DIR, user=user, state_file=STATE_FILE, state_dir=STATE_DIR,
                  refresh_interval=int(refresh_interval), refresh_timeout=float(refresh_timeout),
                  lock_timeout=_seconds(lock_timeout), dhcp4=dhcp_destinations(dhcp4))
    files = {
        MODE_FILE: (policy["mode"] + "\n", 0o644),
        POLICY_FILE: (json.dumps(policy, indent=1, sort_keys=True) + "\n", 0o644),
    }
    if policy["mode"] == "unrestricted":
        files[SUDOERS_FILE] = (render(templates.SUDOERS_FULL, **values), 0o440)
        return files
    cidr4, cidr6 = split_cidrs(policy["cidrs"])
    files.update({
        EGRESS_DIR + "/domains": ("".join(d + "\n" for d in policy["domains"]), 0o644),
        EGRESS_DIR + "/rules.nft": (render(templates.RULES, cidr4=cidr4, cidr6=cidr6, **values), 0o644),
        "/usr/local/sbin/pixels-egress-refresh": (render(templates.REFRESH, **values), 0o755),
        "/usr/local/sbin/safe-apt": (render(templates.SAFE_APT, **values), 0o755),
        SUDOERS_FILE: (render(templates.SUDOERS_RESTRICTED, **values), 0o440),
        "/etc/systemd/system/pixels-egress.service": (render(templates.UNIT_BOOT, **values), 0o644),
        "/etc/systemd/system/pixels-egress-refresh.service": (render(templates.UNIT_REFRESH, **values), 0o644),
        "/etc/systemd/system/pixels-egress-refresh.timer": (render(templates.UNIT_TIMER, **values), 0o644),
    })
    # Fail closed at boot: no network configuration unless the rules loaded.
    for unit in templates.NETWORK_UNITS:
        files[f"/etc/systemd/system/{unit}.d/pixels-egress.conf"] = (render(templates.NETWORK_DROPIN, **values), 0o644)
    return files


def manifest(files):
    """One line per file (path, mode, sha256), sorted: what the installer records."""
    lines = []
    for path in sorted(files):
        content, mode = files[path]
        lines.append(f"{path} {mode:o} {hashlib.sha256(content.encode()).hexdigest()}")
    return "".join(line + "\n" for line in lines)


def bundle(files, installer):
    """A tar stream: the files under stage/, the installer as install.sh, the manifest."""
    buffer = io.BytesIO()
    now = int(time.time())
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        entries = {"stage" + path: (content, mode) for path, (content, mode) in files.items()}
        entries["install.sh"] = (installer, 0o700)
        entries["manifest"] = (manifest(files), 0o644)
        for name, (content, mode) in sorted(entries.items()):
            data = content.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime, info.uid, info.gid = len(data), mode, now, 0, 0
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _seconds(value):
    """A time limit for flock -w and the like: whole seconds are written without '.0'."""
    value = float(value)
    return int(value) if value.is_integer() else value


def installer(policy, files, resolve_timeout=RESOLVE_TIMEOUT, reuse=False, lock_timeout=LOCK_TIMEOUT):
    return render(templates.INSTALL, mode=policy["mode"], table=TABLE, egress_dir=EGRESS_DIR,
                  resolve_timeout=float(resolve_timeout), reuse=reuse, state_dir=STATE_DIR,
                  lock_timeout=_seconds(lock_timeout),
                  paths=sorted(files), sudoers=SUDOERS_FILE, network_units=templates.NETWORK_UNITS,
                  manifest_file=MANIFEST_FILE, state_file=STATE_FILE)


# -- inside the sandbox -------------------------------------------------------------------

def read_current(backend, instance):
    """(recorded policy or None, installed manifest text or None, last state or None)."""
    def load(path):
        data = backend.read_file(instance, path)
        return None if data is None else data.decode("utf-8", "replace")

    policy_text, manifest_text, state_text = load(POLICY_FILE), load(MANIFEST_FILE), load(STATE_FILE)
    mode_text = load(MODE_FILE)
    policy = None
    if policy_text:
        try:
            policy = json.loads(policy_text)
        except ValueError:
            policy = None
    if mode_text and mode_text.strip() == "unrestricted":
        policy = {"mode": "unrestricted", "domains": [], "cidrs": []}
    state = None
    if state_text:
        try:
            state = json.loads(state_text)
        except ValueError:
            state = None
    return policy, manifest_text, state


def table_loaded(backend, instance):
    """Whether the sandbox's kernel has our table (root inside may have flushed it)."""
    result = backend.execute(instance, ["nft", "list", "table", "inet", TABLE])
    return result.rc == 0


# Unpacks the bundle in a temporary directory under root's own state directory, removed on
# every exit (a signal included), and runs the installer there.
INSTALL_WRAPPER = templates.STATE_DIR_SH + """\
d=$(mktemp -d "$state_dir/install.XXXXXX")
trap 'rm -rf "$d"' EXIT
trap 'exit 129' HUP INT TERM
tar -x -C "$d" -f -
cd "$d"
sh ./install.sh
"""
LOCK_BUSY = 5  # the installer's exit code when the lock stayed busy: nothing was changed


def install(backend, instance, policy, files, resolve_timeout=RESOLVE_TIMEOUT, reuse=False, lock_timeout=LOCK_TIMEOUT):
    """Ship and run the installer; the state it prints (resolution) as a dict.

    ``reuse``: keep the addresses the sandbox resolved last (at most one timer interval old)
    and look up only new domains, so adding one domain does not wait for slow ones.
    """
    payload = bundle(files, installer(policy, files, resolve_timeout, reuse, lock_timeout))
    script = "set -e\n" + render(INSTALL_WRAPPER, state_dir=STATE_DIR)
    result = backend.execute(instance, ["sh", "-c", script], stdin=payload)
    out = result.stdout.decode("utf-8", "replace") if isinstance(result.stdout, bytes) else str(result.stdout)
    err = result.stderr.decode("utf-8", "replace") if isinstance(result.stderr, bytes) else str(result.stderr)
    if result.rc == LOCK_BUSY:
        raise PixelsError(
            f"Applying egress mode {policy['mode']} inside {instance} failed: {err.strip() or out.strip()}. "
            f"Nothing was changed inside the sandbox: its previous policy stays in force.",
            stdout=out, stderr=err)
    if result.rc != 0:
        raise PixelsError(
            f"Applying egress mode {policy['mode']} inside {instance} failed (exit {result.rc}): "
            f"{printable(err.strip() or out.strip())[-4000:]}. The sandbox stays locked down (restricted sudo, mode file "
            f"{MODE_FILE}); fix the cause and run the task again.",
            stdout=out, stderr=err)
    state = None
    for line in reversed(out.splitlines()):
        if line.startswith("{"):
            try:
                state = json.loads(line)
                break
            except ValueError:
                continue
    return state or {}


def policy_view(policy, state, host_layer="none"):
    """What the modules return: the real policy of the sandbox."""
    state = state or {}
    resolved = state.get("resolved") or {}
    addresses = sorted({a for addrs in resolved.values() for a in addrs},
                       key=lambda a: (ipaddress.ip_address(a).version, ipaddress.ip_address(a)))
    return {
        "mode": policy["mode"],
        "domains": list(policy.get("domains", [])),
        "cidrs": list(policy.get("cidrs", [])),
        "resolved": {d: resolved.get(d, []) for d in policy.get("domains", [])},
        "addresses": addresses,
        "unresolved": [d for d in policy.get("domains", []) if not resolved.get(d)],
        "resolvers": list(state.get("resolvers") or []),
        "resolved_at": state.get("resolved_at"),
        "host_layer": host_layer,
    }
