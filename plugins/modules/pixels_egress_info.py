#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, homelab.pixels contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: pixels_egress_info
short_description: Read the network egress policy of a pixels sandbox
version_added: 0.1.0
description:
  - Returns the policy as the sandbox has it (mode, domains, CIDRs, the addresses they last
    resolved to, what did not resolve), which host layer enforces it, and whether its
    nftables rules are loaded in the sandbox right now.
  - The sandbox must be running.
author:
  - homelab.pixels developers (@homelab-pixels)
options:
  name:
    description:
      - Sandbox name, such as V(mybox).
    type: str
    required: true
extends_documentation_fragment:
  - homelab.pixels.connection
  - homelab.pixels.connection.module
  - homelab.pixels.attributes
  - homelab.pixels.attributes.info_module
seealso:
  - module: homelab.pixels.pixels_egress
"""

EXAMPLES = r"""
- name: Read the policy
  homelab.pixels.pixels_egress_info:
    name: mybox
  register: egress

- name: Fail when the rules are not loaded
  ansible.builtin.assert:
    that: egress.policy.enforced
"""

RETURN = r"""
policy:
  description:
    - The keys that M(homelab.pixels.pixels_egress) returns as RV(homelab.pixels.pixels_egress#module:policy), and C(enforced).
    - V(unrestricted) for a sandbox that never had a policy.
  returned: success
  type: dict
  contains:
    enforced:
      description: Whether the sandbox's nftables table is loaded (always true for V(unrestricted)).
      type: bool
      sample: true
  sample:
    mode: allowlist
    domains: [pypi.org]
    cidrs: []
    resolved: {"pypi.org": ["151.101.0.223"]}
    addresses: ["151.101.0.223"]
    unresolved: []
    resolvers: [10.123.0.1]
    resolved_at: "2026-11-23T03:10:00Z"
    host_layer: nftables
    enforced: true
"""

from ansible_collections.homelab.pixels.plugins.module_utils.egress_apply import info
from ansible_collections.homelab.pixels.plugins.module_utils.names import instance_name
from ansible_collections.homelab.pixels.plugins.module_utils.pixels_module import PixelsModule


def main_logic(module):
    module.exit_json(changed=False, policy=info(module.backend, instance_name(module.params["name"])))


def main():
    module = PixelsModule(argument_spec=dict(name=dict(type="str", required=True)), supports_check_mode=True)
    module.run(main_logic)


if __name__ == "__main__":
    main()
