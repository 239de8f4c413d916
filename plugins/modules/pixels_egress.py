#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, homelab.pixels contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: pixels_egress
short_description: Set the network egress policy of a pixels sandbox
version_added: 0.1.0
description:
  - Restricts what a sandbox can reach, in a way its C(pixel) user cannot switch off.
  - Inside the sandbox, an nftables table (C(inet pixels_egress)) drops all output except
    loopback, established connections, DHCP (to the broadcast address and the server of the
    sandbox's Incus network only), DNS to the sandbox's own resolvers, and the allowed
    addresses, IPv4 and IPv6 alike; denied packets are logged with a rate limit.
  - Domains are resolved inside the sandbox, in parallel and with a short timeout; a timer
    re-resolves them (CDN addresses rotate) and swaps the address sets in one transaction. A
    domain that does not resolve is reported, not fatal.
  - The rules load at boot before the network comes up, and the network does not come up
    without them, so they hold through restarts, checkpoint restores and clones.
  - With a restricted mode, C(pixel) gets a restricted sudo (only C(safe-apt), which installs
    packages from the configured repositories and refuses options and local files), written
    to C(/etc/sudoers.d/pixel) after C(visudo -cf). C(safe-apt install) takes literal names of
    packages the configured repositories have (no apt patterns or regular expressions), with an
    optional C(=VERSION) that is not older than the installed one (no downgrades).
    V(unrestricted) restores full sudo.
  - The mode is recorded on the instance (C(user.pixels.egress)) and in
    C(/etc/pixels/egress/mode) inside the sandbox, before anything else is changed, so that when a
    later step fails the sandbox stays locked down and the task fails. When the rules cannot be
    loaded, the sandbox's network links are taken down until a later run succeeds.
  - A change that removes entries narrows the host layer to what both the old and the new
    policy allow before the sandbox's own layer changes, and the sandbox's files change only
    under the policy's lock, so a task that fails half-way leaves the stricter policy in force
    (see O(lock_timeout)).
  - A second layer outside the sandbox, which root inside it cannot lift, is added when
    possible; see O(host_layer).
  - Runs on the controller and talks to Incus; the sandbox must be running.
  - The role C(homelab.pixels.egress) wraps this module for playbooks.
author:
  - homelab.pixels developers (@homelab-pixels)
options:
  name:
    description:
      - Sandbox name, such as V(mybox) (the instance C(px-mybox)).
    type: str
    required: true
  mode:
    description:
      - V(unrestricted) removes every filter and restores full sudo.
      - V(agent) allows the agent preset (model APIs, package registries, forges, mirrors; see
        O(preset)) plus O(allow), minus O(deny). The sandbox reports V(agent).
      - V(allowlist) allows only O(domains) or what O(allow) added.
      - Defaults to the sandbox's current mode (for O(allow) and O(deny) on their own).
    type: str
    choices: [unrestricted, agent, allowlist]
  allow:
    description:
      - Domains (such as V(pypi.org)) or addresses and CIDRs (such as V(192.0.2.0/24) or
        V(2001:db8::/32)) to add to the list.
    type: list
    elements: str
  deny:
    description:
      - Entries to remove from the list. Each must be in it, or the task fails and nothing changes.
    type: list
    elements: str
  domains:
    description:
      - The full list (domains and CIDRs), replacing the current one; O(allow) and O(deny) apply on top.
      - Without it, the list is the current one when the mode stays the same, else the agent
        preset for V(agent) and empty for V(allowlist).
    type: list
    elements: str
  preset:
    description:
      - Replaces the built-in agent preset (used when a sandbox switches to V(agent) without
        O(domains)). Extend it rather than replace it with O(allow).
    type: list
    elements: str
  user:
    description:
      - The sandbox's unprivileged user whose sudo is restricted or restored.
    type: str
    default: pixel
  host_layer:
    description:
      - V(auto) tries an Incus network ACL on the sandbox's NICs (works for remote daemons;
        Incus refuses it when the host kernel cannot enforce it), then host nftables rules in
        the forward and input paths, keyed by the sandbox's addresses, when the controller is
        the Incus host (local socket, root). Which layer is active is returned as
        RV(policy.host_layer); a warning says when only the in-sandbox layer is active.
      - V(acl) and V(nftables) use only that one; V(none) skips the host layer.
      - A host where ACLs failed once is remembered (instance key C(user.pixels.egress.host))
        and not asked again under V(auto).
    type: str
    choices: [auto, acl, nftables, none]
    default: auto
  host_table:
    description:
      - Name of the host's nftables table (family C(inet)) for V(nftables).
    type: str
    default: pixels_egress
  refresh_interval:
    description:
      - Seconds between re-resolutions of the domains inside the sandbox.
    type: int
    default: 300
  resolve_timeout:
    description:
      - Seconds each domain lookup may take while the task runs (all run in parallel). A cold
        recursive lookup through a homelab resolver can take over a second; a domain that misses
        it is reported in RV(policy.unresolved) until the next refresh. The timer's lookups get
        at least 5 seconds.
    type: float
    default: 3.0
  lock_timeout:
    description:
      - Seconds the task waits for the policy's locks, inside the sandbox (held by its timer's
        refresh or C(safe-apt) while they run) and on the Incus host (held by parallel tasks).
        When a lock stays busy the task fails naming the process that holds it, and nothing in
        that layer was changed.
      - The locks live in root-only directories (C(/run/pixels-egress), mode 0700), so neither
        C(pixel) nor a local user of the host can open, and so hold, them.
    type: float
    default: 60.0
extends_documentation_fragment:
  - homelab.pixels.connection
  - homelab.pixels.connection.module
  - homelab.pixels.attributes
attributes:
  check_mode:
    support: full
    details:
      - Resolution is not run; the returned addresses are the last ones the sandbox resolved.
  diff_mode:
    support: full
    details:
      - Shows the mode and the list of domains and CIDRs, one a line, before and after.
  idempotent:
    support: full
    details:
      - The host layer is rewritten when the sandbox's resolved addresses changed since the
        last run (the timer re-resolves them inside).
notes:
  - Denied packets are logged by the kernel with the prefix C(pixels-egress drop:); the kernel
    may not log from a container's network namespace unless C(net.netfilter.nf_log_all_netns=1)
    on the host.
  - Host nftables rules are keyed by the sandbox's addresses at the time of the task; run the
    task again after a clone (the clone keeps its in-sandbox rules, and gets its own host rules).
seealso:
  - module: homelab.pixels.pixels_egress_info
  - module: homelab.pixels.pixels_container
"""

EXAMPLES = r"""
- name: Agents may reach their APIs, registries and forges, nothing else
  homelab.pixels.pixels_egress:
    name: mybox
    mode: agent

- name: Plus an internal mirror
  homelab.pixels.pixels_egress:
    name: mybox
    allow:
      - pypi.internal.lan
      - 10.20.0.0/16

- name: Only what is listed
  homelab.pixels.pixels_egress:
    name: mybox
    mode: allowlist
    domains: [deb.debian.org, pypi.org, files.pythonhosted.org]
  register: egress

- name: Show what did not resolve
  ansible.builtin.debug:
    var: egress.policy.unresolved

- name: No filter, full sudo
  homelab.pixels.pixels_egress:
    name: mybox
    mode: unrestricted
"""

RETURN = r"""
policy:
  description: The policy of the sandbox after the task.
  returned: success
  type: dict
  contains:
    mode:
      description: The mode as set (V(agent) stays V(agent)).
      type: str
      sample: agent
    domains:
      description: Allowed domains, sorted.
      type: list
      elements: str
      sample: [deb.debian.org, pypi.org]
    cidrs:
      description: Allowed addresses and networks, IPv4 first.
      type: list
      elements: str
      sample: [185.199.108.0/22]
    resolved:
      description: Each domain with the addresses it resolved to inside the sandbox.
      type: dict
      sample: {"pypi.org": ["151.101.0.223", "2a04:4e42::223"]}
    addresses:
      description: All resolved addresses, IPv4 first.
      type: list
      elements: str
      sample: ["151.101.0.223", "2a04:4e42::223"]
    unresolved:
      description: Domains that did not resolve (blocked until the timer resolves them).
      type: list
      elements: str
      sample: [mise.run]
    resolvers:
      description: The sandbox's resolvers, the only hosts it may send DNS queries to.
      type: list
      elements: str
      sample: [10.123.0.1]
    resolved_at:
      description: When the addresses were resolved (UTC), null before the first time.
      type: str
      sample: "2026-11-23T03:10:00Z"
    host_layer:
      description: The layer outside the sandbox, V(acl), V(nftables) or V(none).
      type: str
      sample: nftables
"""

from ansible_collections.homelab.pixels.plugins.module_utils import egress
from ansible_collections.homelab.pixels.plugins.module_utils.egress_apply import apply
from ansible_collections.homelab.pixels.plugins.module_utils.names import instance_name
from ansible_collections.homelab.pixels.plugins.module_utils.pixels_module import PixelsModule


def main_logic(module):
    if not egress.HAS_JINJA2:
        module.fail_json(msg="jinja2 is required on the controller to render the egress rules: pip install jinja2.")
    result = apply(module.backend, instance_name(module.params["name"]), module.params, module.check_mode)
    for warning in result.pop("warnings"):
        module.warn(warning)
    module.exit_json(**result)


def main():
    module = PixelsModule(
        argument_spec=dict(
            name=dict(type="str", required=True),
            mode=dict(type="str", choices=list(egress.MODES)),
            allow=dict(type="list", elements="str"),
            deny=dict(type="list", elements="str"),
            domains=dict(type="list", elements="str"),
            preset=dict(type="list", elements="str"),
            user=dict(type="str", default="pixel"),
            host_layer=dict(type="str", default="auto", choices=["auto", "acl", "nftables", "none"]),
            host_table=dict(type="str", default="pixels_egress"),
            refresh_interval=dict(type="int", default=300),
            resolve_timeout=dict(type="float", default=3.0),
            lock_timeout=dict(type="float", default=60.0),
        ),
        supports_check_mode=True,
    )
    module.run(main_logic)


if __name__ == "__main__":
    main()
