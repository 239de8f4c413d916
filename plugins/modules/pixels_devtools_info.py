#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, homelab.pixels contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: pixels_devtools_info
short_description: Progress of the dev tools installer inside a pixels sandbox
version_added: 0.1.0
description:
  - Reports the background installer of the C(homelab.pixels.devtools) role, step by step, with the tail of each
    step's log.
  - Runs inside the sandbox, like any module on a sandbox host (for example over the C(homelab.pixels.incus)
    connection); it does not talk to Incus.
author:
  - homelab.pixels developers (@homelab-pixels)
options:
  path:
    description:
      - Status directory the installer writes.
    type: path
    default: /var/lib/pixels/devtools
  tail_lines:
    description:
      - Lines of each step's log to return; V(0) for none.
    type: int
    default: 20
  unit:
    description:
      - The installer's systemd unit. A step still marked running while this unit is not active (the sandbox
        was stopped or cloned mid-install) is reported as failed. Empty to skip the check.
    type: str
    default: pixels-devtools.service
attributes:
  check_mode:
    description: Can run in check mode and return changed status prediction without modifying target.
    support: full
    details:
      - Read-only; runs the same in check mode.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check mode), when in diff mode.
    support: none
  idempotent:
    description: When run twice in a row outside check mode, with the same arguments, the second invocation reports no change.
    support: full
seealso:
  - module: homelab.pixels.pixels_container
"""

EXAMPLES = r"""
- name: Where is the installer?
  homelab.pixels.pixels_devtools_info:
  register: devtools

- name: Show the failed steps with their logs
  ansible.builtin.debug:
    msg: "{{ devtools.steps | selectattr('state', 'eq', 'failed') | list }}"

- name: Wait until it has finished
  homelab.pixels.pixels_devtools_info:
  register: devtools
  until: devtools.state in ['done', 'failed']
  retries: 180
  delay: 5
"""

RETURN = r"""
state:
  description:
    - The whole installer; V(absent) when it never ran in this sandbox. V(failed) once a step failed and
      none is running.
  returned: always
  type: str
  choices: [absent, pending, running, done, failed]
  sample: running
installer:
  description: The installer that wrote the status (V(mise) or V(npm)); null when absent.
  returned: always
  type: str
  sample: npm
failed_steps:
  description: Names of the failed steps.
  returned: always
  type: list
  elements: str
  sample: []
steps:
  description: The steps in the order they run.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Step name (a tool, or the installer's own set-up such as V(mise) or V(node)).
      type: str
      sample: claude
    state:
      description: V(pending), V(running), V(done) or V(failed).
      type: str
      sample: done
    rc:
      description: Exit code of a finished step; null before.
      type: int
      sample: 0
    started:
      description: Start time (seconds since the epoch); null when pending.
      type: int
      sample: 1795000000
    finished:
      description: End time (seconds since the epoch); null until finished.
      type: int
      sample: 1795000046
    log_tail:
      description: The last O(tail_lines) lines of the step's output.
      type: str
      sample: "added 3 packages in 12s"
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.homelab.pixels.plugins.module_utils.devtools import read_status


def unit_active(module, unit):
    """Whether the unit is active or starting; None when systemd cannot tell."""
    systemctl = module.get_bin_path("systemctl")
    if not unit or not systemctl:
        return None
    rc, out, _err = module.run_command([systemctl, "is-active", unit])
    state = out.strip()
    if state in ("active", "activating", "reloading"):
        return True
    if state in ("inactive", "failed", "deactivating"):
        return False
    return None


def main():
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "default": "/var/lib/pixels/devtools"},
            "tail_lines": {"type": "int", "default": 20},
            "unit": {"type": "str", "default": "pixels-devtools.service"},
        },
        supports_check_mode=True,
    )
    if module.params["tail_lines"] < 0:
        module.fail_json(msg=f"tail_lines={module.params['tail_lines']} must be 0 or more.")
    status = read_status(module.params["path"], module.params["tail_lines"],
                         lambda: unit_active(module, module.params["unit"]))
    module.exit_json(changed=False, **status)


if __name__ == "__main__":
    main()
