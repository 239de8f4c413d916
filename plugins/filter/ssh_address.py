# -*- coding: utf-8 -*-
# Copyright: (c) 2026, homelab.pixels contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: ssh_address
short_description: Check an address before it becomes an SSH HostName
version_added: 0.1.0
author:
  - homelab.pixels developers (@homelab-pixels)
description:
  - Returns the input when it is an IPv4 or IPv6 address (normalised, without a zone), or with O(hostnames) a DNS
    host name (letters, digits, hyphens and dots); fails otherwise, with O(what) and the reason.
  - Nothing else can go after C(HostName) in an SSH configuration file without changing what it means or breaking
    the file.
options:
  _input:
    description: The address.
    type: str
    required: true
  what:
    description: Whose address it is, for the message.
    type: str
    default: the sandbox
  hostnames:
    description: Accept DNS host names as well as IP addresses.
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: HostName of a sandbox
  ansible.builtin.debug:
    msg: "HostName {{ info.sandboxes[0].ipv4[0] | homelab.pixels.ssh_address(what='px-mybox') }}"
"""

RETURN = r"""
_value:
  description: The address.
  type: str
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.homelab.pixels.plugins.module_utils.untrusted import Untrusted, address


def ssh_address(value, what="the sandbox", hostnames=False):
    try:
        return address(value, hostnames=hostnames)
    except Untrusted as exc:
        raise AnsibleFilterError(f"The address of {what} is not usable as an SSH HostName: {exc}.")


class FilterModule:
    def filters(self):
        return {"ssh_address": ssh_address}
