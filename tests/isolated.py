"""An Incus project of the tests' own, on a bridge of its own.

Incus gives every instance on a bridge a DNS name and refuses to start a second instance of the
same name on that bridge, whatever its project. On the user's bridge the tests' `px-base-dev` or
`px-demo` would clash with the user's sandboxes (and `make site` builds exactly those), so the
tests' project gets its own `default` profile: a root disk on the pool the user's default profile
uses, and `eth0` on a bridge made for the run. (Incus only lets non-default projects own OVN
networks, so the bridge itself lives in the default project; nothing of the user's uses it.)
"""

import hashlib
import ipaddress
import json
import subprocess


def incus(*args, check=True, timeout=300):
    proc = subprocess.run(["incus", *args], capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode:
        raise RuntimeError(f"incus {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc


def bridge_name(project):
    """A bridge name for a project (Linux allows 15 characters)."""
    return "pxt" + hashlib.sha256(project.encode()).hexdigest()[:8]


def _routed():
    out = subprocess.run(["ip", "-4", "-j", "route", "show"], capture_output=True, text=True, check=True).stdout
    nets = []
    for route in json.loads(out or "[]"):
        if route.get("dst") not in (None, "default"):
            nets.append(ipaddress.ip_network(route["dst"], strict=False))
    return nets


def free_subnet(seed):
    """A /24 in 10.200.0.0/13 that nothing on this host routes, chosen from ``seed``."""
    taken = _routed()
    start = int(hashlib.sha256(seed.encode()).hexdigest(), 16) % 2048
    for step in range(2048):
        index = (start + step) % 2048
        net = ipaddress.ip_network(f"10.{200 + index // 256}.{index % 256}.0/24")
        if not any(net.overlaps(other) for other in taken):
            return net
    raise RuntimeError("no free /24 in 10.200.0.0/13 for the test bridge")


MARK = "homelab.pixels tests (deleted after the run)"


def bridge_gateway(network):
    """The host address of an existing bridge, or None when it does not exist."""
    proc = incus("network", "get", network, "ipv4.address", check=False)
    if proc.returncode:
        return None
    return proc.stdout.strip().split("/")[0]


def ensure_bridge(network, seed):
    """The bridge, made when missing; its gateway address."""
    gateway = bridge_gateway(network)
    if gateway:
        return gateway
    subnet = free_subnet(seed)
    gateway = str(next(subnet.hosts()))
    incus("network", "create", network, f"ipv4.address={gateway}/{subnet.prefixlen}", "ipv4.nat=true",
          "ipv6.address=none", "--description", MARK)
    return gateway


def default_pool():
    """The pool of the default project's default profile root disk."""
    return incus("profile", "device", "get", "default", "root", "pool").stdout.strip()


def ensure_project(project, network):
    """The project with its own profiles (root disk on the user's pool, eth0 on ``network``)
    and the default project's images."""
    listed = json.loads(incus("project", "list", "--format", "json").stdout)
    current = next((p for p in listed if p["name"] == project), None)
    if current and current["config"].get("features.profiles") != "true":
        # an older run's project shared the user's profile: start again
        for instance in json.loads(incus("list", "--project", project, "--format", "json").stdout):
            incus("delete", "--force", "--project", project, instance["name"], check=False)
        incus("project", "delete", project)
        current = None
    if current is None:
        incus("project", "create", project, "-c", "features.images=false", "-c", "features.profiles=true")
    url = f"/1.0/profiles/default?project={project}"
    profile = json.loads(incus("query", url).stdout)
    devices = {"root": {"type": "disk", "path": "/", "pool": default_pool()},
               "eth0": {"type": "nic", "name": "eth0", "network": network}}
    if profile.get("devices") != devices:
        incus("query", "-X", "PATCH", url, "--data", json.dumps({"devices": devices}))


def _ours(kind, name):
    """Whether a network or storage pool was made by these tests (its description says so)."""
    shown = incus("query", f"/1.0/{kind}/{name}", check=False)
    return shown.returncode == 0 and json.loads(shown.stdout).get("description") == MARK


def drop(project, network, pool=None):
    """Delete the project's instances and images, the project, then the bridge and the pool when
    they are ours; every step is tried, and what could not go is returned."""
    problems = []
    if incus("project", "show", project, check=False).returncode == 0:
        for instance in json.loads(incus("list", "--project", project, "--format", "json").stdout):
            incus("delete", "--force", "--project", project, instance["name"], check=False)
        # Only a project with images of its own: the others list (and would delete) the default
        # project's, the user's.
        own_images = incus("project", "get", project, "features.images").stdout.strip() == "true"
        for image in json.loads(incus("image", "list", "--project", project, "--format", "json").stdout
                                if own_images else "[]"):
            proc = incus("image", "delete", "--project", project, image["fingerprint"], check=False)
            if proc.returncode:
                problems.append(f"image {image['fingerprint']}: {proc.stderr.strip()}")
        proc = incus("project", "delete", project, check=False)
        if proc.returncode:
            problems.append(f"project {project}: {proc.stderr.strip()}")
    for kind, name in (("networks", network), ("storage-pools", pool)):
        if name and _ours(kind, name):
            proc = incus("network" if kind == "networks" else "storage", "delete", name, check=False)
            if proc.returncode:
                problems.append(f"{kind[:-1]} {name}: {proc.stderr.strip()}")
    return problems
