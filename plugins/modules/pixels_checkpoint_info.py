#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, homelab.pixels contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: pixels_checkpoint_info
short_description: List the checkpoints of a pixels sandbox with their sizes
version_added: 0.1.0
description:
  - Returns the checkpoints of a sandbox, oldest first, with creation time and size.
author:
  - homelab.pixels developers (@homelab-pixels)
options:
  name:
    description:
      - Sandbox name, such as V(mybox).
    type: str
    required: true
  label:
    description:
      - Only this checkpoint (an empty list when it does not exist).
    type: str
extends_documentation_fragment:
  - homelab.pixels.connection
  - homelab.pixels.connection.module
  - homelab.pixels.attributes
  - homelab.pixels.attributes.info_module
seealso:
  - module: homelab.pixels.pixels_checkpoint
"""

EXAMPLES = r"""
- name: Checkpoints of mybox
  homelab.pixels.pixels_checkpoint_info:
    name: mybox
  register: result

- name: The newest one
  ansible.builtin.debug:
    msg: "{{ (result.checkpoints | last).label }}"
"""

RETURN = r"""
checkpoints:
  description: Checkpoints, oldest first.
  returned: always
  type: list
  elements: dict
  contains:
    label:
      description: Checkpoint label.
      type: str
      sample: ready
    created_at:
      description: Creation time reported by Incus.
      type: str
      sample: "2026-11-22T23:50:01.123456789Z"
    size:
      description:
        - Space the checkpoint alone holds on its pool (what deleting it would free), in bytes.
        - Null when the pool does not know it, which is the case on a btrfs pool without quota groups and
          on one with simple quotas (the default of M(homelab.pixels.incus_host) on Linux 6.7 and newer,
          recorded on the pool as C(user.pixels.btrfs_quota=simple)). Simple quotas charge data to the
          sandbox that wrote it, never to a checkpoint; C(incus_host_btrfs_quota=full) gives real sizes
          at a CPU cost for every deleted sandbox.
      type: int
      sample: 44040192
    stateful:
      description: Whether the checkpoint holds memory state.
      type: bool
      sample: false
"""

from ansible_collections.homelab.pixels.plugins.module_utils.names import check_label, instance_name
from ansible_collections.homelab.pixels.plugins.module_utils.pixels_module import PixelsModule


def main_logic(module):
    label = module.params["label"]
    if label is not None:
        check_label(label)
    checkpoints = module.backend.list_checkpoints(instance_name(module.params["name"]))
    module.exit_json(changed=False, checkpoints=[c.as_dict() for c in checkpoints if label in (None, c.label)])


def main():
    module = PixelsModule(
        argument_spec=dict(name=dict(type="str", required=True), label=dict(type="str")),
        supports_check_mode=True,
    )
    module.run(main_logic)


if __name__ == "__main__":
    main()
