#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, homelab.pixels contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: pixels_container_info
short_description: Read one or all pixels sandboxes
version_added: 0.1.0
description:
  - Returns the C(px-) sandboxes of an Incus project with their status, addresses and limits.
  - All sandboxes are read with one request.
author:
  - homelab.pixels developers (@homelab-pixels)
options:
  name:
    description:
      - Sandbox name, such as V(mybox). Without it, every sandbox is returned.
    type: str
extends_documentation_fragment:
  - homelab.pixels.connection
  - homelab.pixels.connection.module
  - homelab.pixels.attributes
  - homelab.pixels.attributes.info_module
seealso:
  - module: homelab.pixels.pixels_container
"""

EXAMPLES = r"""
- name: All sandboxes
  homelab.pixels.pixels_container_info:
  register: info

- name: Addresses of the running ones
  ansible.builtin.debug:
    msg: "{{ info.sandboxes | selectattr('status', '==', 'running') | map(attribute='ipv4') | list }}"

- name: One sandbox
  homelab.pixels.pixels_container_info:
    name: mybox
  register: mybox
"""

RETURN = r"""
sandboxes:
  description:
    - The sandboxes, sorted by name; empty when O(name) does not exist.
    - Each has the keys that M(homelab.pixels.pixels_container) returns as RV(homelab.pixels.pixels_container#module:sandbox).
  returned: always
  type: list
  elements: dict
  sample:
    - name: mybox
      instance: px-mybox
      status: running
      ipv4: [10.123.0.57]
      ipv6: []
      image: debian/12
      source: null
      cpu: 2
      memory: 2048
      created_at: "2026-11-22T23:50:01.123456789Z"
      description: ""
      checkpoints: [ready]
      metadata: {"user.pixels.image": "debian/12"}
exists:
  description: With O(name), whether that sandbox exists.
  returned: when O(name) is set
  type: bool
  sample: true
"""

from ansible_collections.homelab.pixels.plugins.module_utils.names import instance_name
from ansible_collections.homelab.pixels.plugins.module_utils.pixels_module import PixelsModule


def main_logic(module):
    name = module.params["name"]
    if name is not None:
        sandbox = module.backend.get_sandbox(instance_name(name))
        sandboxes = [sandbox] if sandbox else []
        module.exit_json(changed=False, sandboxes=[s.as_dict() for s in sandboxes], exists=bool(sandboxes))
    sandboxes = sorted(module.backend.list_sandboxes(), key=lambda s: s.name)
    module.exit_json(changed=False, sandboxes=[s.as_dict() for s in sandboxes])


def main():
    module = PixelsModule(argument_spec=dict(name=dict(type="str")), supports_check_mode=True)
    module.run(main_logic)


if __name__ == "__main__":
    main()
