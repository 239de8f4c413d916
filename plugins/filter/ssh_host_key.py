# -*- coding: utf-8 -*-
# Copyright: (c) 2026, homelab.pixels contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: ssh_host_key
short_description: Check an SSH public host key line read from a sandbox
version_added: 0.1.0
author:
  - homelab.pixels developers (@homelab-pixels)
description:
  - Takes a public key line (C(TYPE BASE64 [COMMENT]), as in C(/etc/ssh/ssh_host_ed25519_key.pub)) that a command
    inside a sandbox printed, and returns C(TYPE BASE64) only when it is a host key. TYPE must be one of O(types),
    BASE64 must decode strictly, and the decoded key must name the same TYPE.
  - Fails otherwise, with O(what) and the reason, so that nothing a forged output says reaches a known_hosts file.
options:
  _input:
    description: The key line.
    type: str
    required: true
  what:
    description: What the key is of, for the message (the sandbox's name).
    type: str
    default: the sandbox
  types:
    description: Accepted key types.
    type: list
    elements: str
    default: [ssh-ed25519, ssh-rsa, ecdsa-sha2-nistp256, ecdsa-sha2-nistp384, ecdsa-sha2-nistp521,
              sk-ssh-ed25519@openssh.com, sk-ecdsa-sha2-nistp256@openssh.com, ssh-ed448]
"""

EXAMPLES = r"""
- name: The pinned line
  ansible.builtin.copy:
    content: "px-mybox {{ probe.stdout | homelab.pixels.ssh_host_key(what='px-mybox', types=['ssh-ed25519']) }}\n"
    dest: ~/.ssh/pixels/known_hosts/px-mybox
    mode: "0600"
"""

RETURN = r"""
_value:
  description: C(TYPE BASE64) of the key, without its comment.
  type: str
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.homelab.pixels.plugins.module_utils.untrusted import HOST_KEY_TYPES, Untrusted, host_key


def ssh_host_key(value, what="the sandbox", types=HOST_KEY_TYPES):
    try:
        return host_key(value, tuple(types))
    except Untrusted as exc:
        raise AnsibleFilterError(f"The SSH host key that {what} reported is not a host key: {exc}.")


class FilterModule:
    def filters(self):
        return {"ssh_host_key": ssh_host_key}
