# -*- coding: utf-8 -*-
# Copyright: (c) 2026, homelab.pixels contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What pixels_egress and pixels_egress_info do, for a backend: read, plan, apply, report."""

from __future__ import annotations

from ansible_collections.homelab.pixels.plugins.module_utils import egress, egress_host
from ansible_collections.homelab.pixels.plugins.module_utils.backend import META_EGRESS
from ansible_collections.homelab.pixels.plugins.module_utils.errors import PixelsError
from ansible_collections.homelab.pixels.plugins.module_utils.names import sandbox_name

ONLY_SANDBOX_WARNING = (
    "Only the in-sandbox egress layer is active on {instance}: root inside the sandbox could lift it. "
    "Host layer: {reason}. Run the task on the Incus host itself (local socket, as root) for host "
    "nftables rules, or use a host kernel that enforces Incus network ACLs."
)


def running_sandbox(backend, instance):
    sandbox = backend.get_sandbox(instance)
    if sandbox is None:
        raise PixelsError(f"sandbox {sandbox_name(instance)!r} ({instance}) does not exist: create it with "
                          f"homelab.pixels.pixels_container first.")
    if not sandbox.running:
        raise PixelsError(f"sandbox {sandbox_name(instance)!r} is {sandbox.status}: the egress policy is applied "
                          f"inside it, start it first (pixels_container state=started).")
    return sandbox


def set_config(backend, instance, config):
    """Set (or with an empty value, unset) instance config keys."""
    api = backend.client.api
    backend._wait(api.instances[instance].patch(json={"config": config}))  # pylint: disable=protected-access


def read(backend, instance):
    """Everything recorded about the sandbox's egress: (sandbox, policy, manifest, state)."""
    sandbox = running_sandbox(backend, instance)
    policy, manifest_text, state = egress.read_current(backend, instance)
    if policy is None:
        # Nothing inside yet: the instance key (written by other tools too) or unrestricted.
        mode = sandbox.metadata.get(META_EGRESS) or "unrestricted"
        policy = {"mode": mode if mode in egress.MODES else "unrestricted", "domains": [], "cidrs": []}
    return sandbox, policy, manifest_text, state


def live_instances(backend):
    """Names of the project's instances (all of them, not only px-: a name is what matters)."""
    return [item["name"] for item in backend.get("/1.0/instances", {"recursion": 1}, "listing instances")]


def _is_local(backend):
    return bool(getattr(backend, "_socket_path", None))


def release_host_layer(backend, instance, sandbox):
    """Drop the host rules of a sandbox that is being deleted. They are keyed by its addresses,
    which DHCP hands to the next sandbox: that one must not inherit them. True when removed."""
    recorded = (sandbox.metadata.get(egress_host.META_HOST) or "").split()
    if len(recorded) < 3 or recorded[0] != "nftables" or not _is_local(backend) \
            or egress_host.nft_available() is not None:
        return False
    return egress_host.update_host_rules(recorded[2], instance, [], [], None, backend.project)


def host_layer(backend, instance, sandbox, view, choice, table, check_mode, lock_timeout=egress_host.LOCK_TIMEOUT):
    """Bring the host layer in line with ``view`` (None: remove it). (layer, changed, reason)."""
    recorded = (sandbox.metadata.get(egress_host.META_HOST) or "").split()
    recorded_kind = recorded[0] if recorded else None
    if view is None:
        changed = False
        if recorded_kind == "acl":
            changed = True
            if not check_mode:
                egress_host.remove_acl(backend, instance)
        if _is_local(backend) and egress_host.nft_available() is None:
            if check_mode:
                current = egress_host.read_host_table(table)
                changed = changed or egress_host.chain_name(instance, backend.project) in current["chains"]
            elif egress_host.update_host_rules(table, instance, [], [], None, backend.project,
                                               live_instances(backend), lock_timeout):
                changed = True
        if recorded and not check_mode:
            set_config(backend, instance, {egress_host.META_HOST: ""})
        return "none", changed or bool(recorded), None

    if choice == "none":
        return "none", False, "switched off with host_layer=none"
    addresses4, addresses6 = list(sandbox.ipv4), [a for a in sandbox.ipv6 if not a.lower().startswith("fe80")]
    wanted = egress_host.digest({"view": {k: view.get(k) for k in ("mode", "cidrs", "addresses", "resolvers", "dhcp4")},
                                 "sandbox": sorted(addresses4 + addresses6), "table": table})
    reasons = []
    kinds = []
    if choice in ("auto", "acl"):
        # A host where ACLs failed before is not asked again unless host_layer=acl says so.
        if choice == "acl" or recorded_kind in (None, "acl"):
            kinds.append("acl")
        else:
            reasons.append("Incus network ACLs failed on this host before (host_layer=acl retries)")
    if choice in ("auto", "nftables"):
        kinds.append("nftables")
    for kind in kinds:
        if kind == "acl":
            if recorded == ["acl", wanted]:
                return "acl", False, None
            if check_mode:
                return "acl", True, None
            try:
                egress_host.apply_acl(backend, instance, view)
            except egress_host.LayerUnavailable as exc:
                reasons.append(str(exc))
                continue
            set_config(backend, instance, {egress_host.META_HOST: f"acl {wanted}"})
            return "acl", True, None
        if not _is_local(backend):
            reasons.append("host nftables rules need the controller to be the Incus host (local socket)")
            continue
        problem = egress_host.nft_available()
        if problem:
            reasons.append(problem)
            continue
        current = egress_host.read_host_table(table)
        if recorded == ["nftables", wanted, table] and egress_host.host_rules_current(
                table, instance, addresses4, addresses6, current, backend.project):
            return "nftables", False, None
        if not check_mode:
            egress_host.update_host_rules(table, instance, addresses4, addresses6, view, backend.project,
                                          live_instances(backend), lock_timeout)
            set_config(backend, instance, {egress_host.META_HOST: f"nftables {wanted} {table}"})
        return "nftables", True, None
    if not check_mode and recorded != ["none"]:
        set_config(backend, instance, {egress_host.META_HOST: "none"})
    return "none", False, "; ".join(reasons) or "none available"


def dhcp_servers(backend, instance):
    """(IPv4 addresses of the DHCP servers of the sandbox's managed networks, problem or None).
    Incus' bridges serve DHCP from their own address; other NICs get the broadcast address only."""
    data = backend.get(f"/1.0/instances/{instance}", action=f"reading {instance}'s devices")
    servers, problems = [], []
    for network in sorted({dev["network"] for dev in egress_host._nic_devices(data).values()}):  # pylint: disable=protected-access
        try:
            config = backend.get(f"/1.0/networks/{network}", action=f"reading network {network}").get("config") or {}
        except PixelsError as exc:
            problems.append(exc.message)
            continue
        address = (config.get("ipv4.address") or "").split("/")[0]
        if address and address != "none":
            servers.append(address)
    return servers, "; ".join(problems) or None


def narrowed_view(current, state, desired):
    """The host layer's view of what both the current and the desired policy allow, when the change
    takes something away; None when it only adds (the current rules are already the narrower).

    Loaded before the sandbox's own layer changes, so that a failure half-way (a busy lock, an
    error in either layer) leaves the stricter policy in force outside the sandbox too."""
    if current["mode"] not in egress.RESTRICTED or not state:
        return None  # nothing the host enforces yet; the sandbox's layer fails closed on its own
    kept_domains = set(current.get("domains", [])) & set(desired["domains"])
    kept_cidrs = set(current.get("cidrs", [])) & set(desired["cidrs"])
    if kept_domains == set(current.get("domains", [])) and kept_cidrs == set(current.get("cidrs", [])) \
            and current["mode"] == desired["mode"]:
        return None
    resolved = state.get("resolved") or {}
    narrowed = {"mode": desired["mode"], "domains": sorted(kept_domains), "cidrs": egress.sort_cidrs(kept_cidrs)}
    return egress.policy_view(narrowed, {"resolved": {d: resolved.get(d, []) for d in kept_domains},
                                         "resolvers": state.get("resolvers") or []})


def apply(backend, instance, params, check_mode):
    """Reconcile; a dict with changed, policy, diff, warnings."""
    user = egress.check_user(params.get("user") or "pixel")
    table = egress_host.check_table(params.get("host_table") or egress_host.HOST_TABLE)
    interval = int(params.get("refresh_interval") or 300)
    if interval < 10:
        raise PixelsError(f"refresh_interval={interval} is too short: use at least 10 seconds (default 300).")
    timeout = float(params.get("resolve_timeout") or egress.RESOLVE_TIMEOUT)
    if not 0.1 <= timeout <= 30:
        raise PixelsError(f"resolve_timeout={timeout} must be between 0.1 and 30 seconds.")
    lock_timeout = float(params.get("lock_timeout") or egress.LOCK_TIMEOUT)
    if not 1 <= lock_timeout <= 3600:
        raise PixelsError(f"lock_timeout={lock_timeout:g} must be between 1 and 3600 seconds (default {egress.LOCK_TIMEOUT:g}).")
    sandbox, current, manifest_text, state = read(backend, instance)
    mode = params.get("mode") or current["mode"]
    if params.get("mode") is None and current["mode"] == "unrestricted" and (params.get("allow") or params.get("domains")):
        raise PixelsError(f"{sandbox_name(instance)!r} has no egress policy yet: set mode (agent or allowlist) "
                          f"together with allow or domains.")
    desired = egress.desired_policy(current, mode, allow=params.get("allow"), deny=params.get("deny"),
                                    domains=params.get("domains"), preset=params.get("preset"))
    restricted = desired["mode"] in egress.RESTRICTED
    warnings = []
    dhcp4 = []
    if restricted:
        dhcp4, problem = dhcp_servers(backend, instance)
        if problem:
            warnings.append(f"DHCPv4 from {instance} is allowed to the broadcast address only: {problem}.")
    files = egress.render_files(desired, user=user, refresh_interval=interval, refresh_timeout=max(5.0, timeout),
                                dhcp4=dhcp4)
    inside_changed = (manifest_text != egress.manifest(files)
                      or sandbox.metadata.get(META_EGRESS) != desired["mode"]
                      or (restricted and not egress.table_loaded(backend, instance)))
    choice = params.get("host_layer") or "auto"
    host_changed = False
    if inside_changed and not check_mode:
        # The intent first: provisioning and the inventory read it even if the rest fails.
        set_config(backend, instance, {META_EGRESS: desired["mode"]})
        # A change that takes something away narrows the host layer first; the sandbox's layer
        # then changes whole under its lock (or not at all); the host layer follows.
        narrowed = narrowed_view(current, state, desired) if restricted else None
        if narrowed is not None:
            _layer, host_changed, _reason = host_layer(backend, instance, sandbox, dict(narrowed, dhcp4=dhcp4),
                                                       choice, table, check_mode, lock_timeout)
            sandbox = backend.get_sandbox(instance)  # the record of the host layer changed
        state = egress.install(backend, instance, desired, files, resolve_timeout=timeout,
                               reuse=current["mode"] in egress.RESTRICTED, lock_timeout=lock_timeout)
    elif inside_changed:
        state = state if current["mode"] == desired["mode"] else {}
    view = egress.policy_view(desired, state)
    layer, changed, reason = host_layer(backend, instance, sandbox, dict(view, dhcp4=dhcp4) if restricted else None,
                                        choice, table, check_mode, lock_timeout)
    host_changed = host_changed or changed
    view["host_layer"] = layer
    if restricted and layer == "none":
        warnings.append(ONLY_SANDBOX_WARNING.format(instance=instance, reason=reason))
    if view["unresolved"] and not check_mode:
        warnings.append(f"{len(view['unresolved'])} allowed domains did not resolve inside {instance} and stay "
                        f"blocked until they do (re-resolved every {interval} s): {', '.join(view['unresolved'])}.")
    before = {k: current.get(k, []) for k in ("mode", "domains", "cidrs")}
    after = {k: desired[k] for k in ("mode", "domains", "cidrs")}
    return {"changed": bool(inside_changed or host_changed), "policy": view, "warnings": warnings,
            "diff": {"before": _diff_text(before), "after": _diff_text(after)}}


def _diff_text(policy):
    """One entry a line, so --diff shows the added and removed entries."""
    lines = [f"mode: {policy['mode']}"] + [f"domain: {d}" for d in policy["domains"]] + [f"cidr: {c}" for c in policy["cidrs"]]
    return "".join(line + "\n" for line in lines)


def active_host_layer(backend, instance, sandbox):
    """The host layer that is in place now (a clone inherits the record, not the host rules)."""
    recorded = (sandbox.metadata.get(egress_host.META_HOST) or "").split()
    if recorded[:1] == ["acl"]:
        data = backend.client.api.instances[instance].get().json()["metadata"]
        nics = egress_host._nic_devices(data)  # pylint: disable=protected-access
        return "acl" if any(dev.get("security.acls") for dev in nics.values()) else "none"
    if recorded[:1] == ["nftables"] and len(recorded) == 3:
        if not _is_local(backend) or egress_host.nft_available():
            return "nftables"  # cannot look from here; as recorded
        current = egress_host.read_host_table(recorded[2])
        addresses = list(sandbox.ipv4) + [a for a in sandbox.ipv6 if not a.lower().startswith("fe80")]
        keyed = egress_host.host_rules_current(recorded[2], instance, addresses, [], current, backend.project)
        return "nftables" if keyed else "none"
    return "none"


def info(backend, instance):
    """The policy as the sandbox has it, with whether its rules are loaded right now."""
    sandbox, policy, _manifest, state = read(backend, instance)
    view = egress.policy_view(policy, state if policy["mode"] in egress.RESTRICTED else {})
    view["host_layer"] = active_host_layer(backend, instance, sandbox) if policy["mode"] in egress.RESTRICTED else "none"
    view["enforced"] = policy["mode"] == "unrestricted" or egress.table_loaded(backend, instance)
    return view
