#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, homelab.pixels contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: pixels_checkpoint
short_description: Create, delete and restore checkpoints of pixels sandboxes
version_added: 0.1.0
description:
  - A checkpoint is an Incus snapshot of a sandbox's root filesystem (copy-on-write on
    btrfs and zfs pools, so near-instant).
  - New sandboxes can be cloned from a checkpoint with
    M(homelab.pixels.pixels_container) and O(homelab.pixels.pixels_container#module:source=box:label).
author:
  - homelab.pixels developers (@homelab-pixels)
options:
  name:
    description:
      - Sandbox name, such as V(mybox) (the instance C(px-mybox)).
    type: str
    required: true
  label:
    description:
      - Checkpoint label; 1-63 letters, digits, C(.), C(_) or C(-).
      - Required for V(absent) and V(restored). With V(present) it defaults to
        C(px-YYYYMMDD-HHMMSS) (UTC), a new checkpoint on every run.
    type: str
  state:
    description:
      - V(present) takes the checkpoint unless one with O(label) exists.
      - V(absent) deletes it.
      - V(restored) stops the sandbox, rolls it back to the checkpoint and starts it again
        when it was running. It always reports a change.
    type: str
    choices: [present, absent, restored]
    default: present
extends_documentation_fragment:
  - homelab.pixels.connection
  - homelab.pixels.connection.module
  - homelab.pixels.attributes
  - homelab.pixels.wait
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details:
      - Shows the list of checkpoint labels before and after.
  idempotent:
    support: partial
    details:
      - V(present) with a O(label) and V(absent) are idempotent. V(present) without a label
        creates a new checkpoint each run, and V(restored) always restores.
seealso:
  - module: homelab.pixels.pixels_checkpoint_info
  - module: homelab.pixels.pixels_container
"""

EXAMPLES = r"""
- name: Checkpoint a prepared sandbox
  homelab.pixels.pixels_checkpoint:
    name: mybox
    label: ready

- name: Checkpoint with a time-stamped label
  homelab.pixels.pixels_checkpoint:
    name: mybox
  register: checkpoint

- name: Roll the sandbox back
  homelab.pixels.pixels_checkpoint:
    name: mybox
    label: ready
    state: restored

- name: Delete the checkpoint
  homelab.pixels.pixels_checkpoint:
    name: mybox
    label: ready
    state: absent
"""

RETURN = r"""
checkpoint:
  description: The checkpoint the task was about; empty after V(absent).
  returned: always
  type: dict
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
      description: Space the checkpoint holds on its pool, in bytes; null when the pool does not report it.
      type: int
      sample: 44040192
    stateful:
      description: Whether the checkpoint holds memory state (never, for checkpoints made here).
      type: bool
      sample: false
checkpoints:
  description: Labels of all checkpoints of the sandbox after the task, oldest first.
  returned: always
  type: list
  elements: str
  sample: [base, ready]
"""

from ansible_collections.homelab.pixels.plugins.module_utils.errors import PixelsError
from ansible_collections.homelab.pixels.plugins.module_utils.names import check_label, default_label, instance_name
from ansible_collections.homelab.pixels.plugins.module_utils.pixels_module import WAIT_ARGS, PixelsModule


def main_logic(module):
    params = module.params
    state = params["state"]
    instance = instance_name(params["name"])
    if params["label"] is not None:
        label = check_label(params["label"])
    elif state == "present":
        label = default_label()
    else:
        raise PixelsError(f"state={state} needs label: name the checkpoint to {'delete' if state == 'absent' else 'restore'}.")

    backend = module.backend
    existing = {c.label: c for c in backend.list_checkpoints(instance)}  # oldest first
    before = list(existing)
    changed = False
    if state == "present":
        changed = label not in existing
        if changed and not module.check_mode:
            backend.create_checkpoint(instance, label)
    elif state == "absent":
        changed = label in existing
        if changed and not module.check_mode:
            backend.delete_checkpoint(instance, label)
    else:
        if label not in existing:
            raise PixelsError(f"{params['name']!r} has no checkpoint {label!r} to restore; its checkpoints are: "
                              f"{', '.join(before) or 'none'}.")
        changed = True
        if not module.check_mode:
            backend.restore_checkpoint(instance, label)
            sandbox = backend.get_sandbox(instance)
            if sandbox.running and params["wait"]:
                backend.wait_for_address(instance, params["wait_timeout"])

    if module.check_mode:
        after = [k for k in before if not (state == "absent" and k == label)]
        if state == "present" and changed:
            after.append(label)
        checkpoint = existing[label].as_dict() if label in existing and state != "absent" else (
            {} if state == "absent" else {"label": label})
    else:
        current = {c.label: c for c in backend.list_checkpoints(instance)}
        after = list(current)
        checkpoint = current[label].as_dict() if label in current else {}
    module.exit_json(changed=changed, checkpoint=checkpoint, checkpoints=after,
                     diff={"before": {"checkpoints": before}, "after": {"checkpoints": after}})


def main():
    module = PixelsModule(
        argument_spec=dict(
            name=dict(type="str", required=True),
            label=dict(type="str"),
            state=dict(type="str", default="present", choices=["present", "absent", "restored"]),
            **WAIT_ARGS,
        ),
        supports_check_mode=True,
    )
    module.run(main_logic)


if __name__ == "__main__":
    main()
