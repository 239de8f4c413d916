#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, homelab.pixels contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: pixels_sandboxes
short_description: Many pixels sandboxes at once, side by side
version_added: 0.2.0
description:
  - Does what M(homelab.pixels.pixels_container) does, for every entry of O(sandboxes), in
    parallel threads of one process. Ten clones of a base take about as long as the slowest
    one, where a loop of M(homelab.pixels.pixels_container) (even with C(async)) pays a module
    start for each.
  - A failed entry does not stop the others; it removes what it half-made, and the task fails
    naming every failed sandbox with its message.
  - In a playbook this runs on the controller, in the C(ansible-playbook) process (an action
    plugin); that Python needs pylxd, as for the other modules on localhost.
author:
  - homelab.pixels developers (@homelab-pixels)
options:
  sandboxes:
    description:
      - The sandboxes, each with the options of M(homelab.pixels.pixels_container) that
        describe one sandbox. Names must be unique.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: Sandbox name, such as V(mybox); the instance is C(px-mybox).
        type: str
        required: true
      state:
        description: As for M(homelab.pixels.pixels_container).
        type: str
        choices: [present, started, stopped, restarted, absent]
        default: started
      image:
        description: Image of a new sandbox; falls back as for M(homelab.pixels.pixels_container).
        type: str
      image_server:
        description: Simplestreams server for O(sandboxes[].image).
        type: str
      source:
        description: V(box) or V(box:label) to clone.
        type: str
      base:
        description: Base whose newest checkpoint a new sandbox clones.
        type: str
      cpu:
        description: CPU limit, also reconciled on an existing sandbox.
        type: int
      memory:
        description: Memory limit in MiB, also reconciled on an existing sandbox.
        type: int
      pool:
        description: Storage pool of a new sandbox from an image.
        type: str
      description:
        description: Description stored on a new instance.
        type: str
        default: ""
  parallel:
    description:
      - How many sandboxes are worked on at the same time.
    type: int
    default: 10
  stop_timeout:
    description:
      - Seconds to wait for a clean shutdown before a sandbox is stopped by force.
    type: int
    default: 30
requirements:
  - pylxd >= 2.4 in the Python that runs the module (in a playbook, ansible-playbook's)
notes:
  - Connection options come from the task, then the E(PIXELS_*) environment variables, then
    the pixels CLI's C(config.toml), as for the other modules (and C(module_defaults) with
    C(group/homelab.pixels.pixels)).
extends_documentation_fragment:
  - homelab.pixels.connection
  - homelab.pixels.attributes
  - homelab.pixels.wait
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details:
      - One diff per sandbox (state, CPU and memory), headed by its name.
  idempotent:
    support: partial
    details:
      - V(restarted) always restarts; every other state reports no change when the sandbox
        already matches.
seealso:
  - module: homelab.pixels.pixels_container
"""

EXAMPLES = r"""
- name: Workers from the newest checkpoint of base dev, side by side
  homelab.pixels.pixels_sandboxes:
    sandboxes:
      - {name: worker1, base: dev}
      - {name: worker2, base: dev}
      - {name: worker3, base: dev}

- name: A few sandboxes to their states
  homelab.pixels.pixels_sandboxes:
    sandboxes:
      - {name: agent1, base: dev, cpu: 2, memory: 4096}
      - {name: scratch, image: debian/12, state: stopped}
      - {name: old, state: absent}
"""

RETURN = r"""
sandboxes:
  description:
    - One result per entry, in the order of O(sandboxes), each with C(name), C(changed),
      and either C(sandbox) (as RV(homelab.pixels.pixels_container#module:sandbox)) and
      C(diff), or C(failed) and C(msg).
  returned: always
  type: list
  elements: dict
  sample:
    - name: agent1
      changed: true
      sandbox: {name: agent1, instance: px-agent1, status: running, ipv4: [10.123.0.57]}
      diff: {before: {state: absent}, after: {state: running, cpu: 2, memory: 4096}}
"""

from ansible_collections.homelab.pixels.plugins.module_utils.container import MANY_ARGUMENT_SPEC, ensure_many
from ansible_collections.homelab.pixels.plugins.module_utils.incus import IncusBackend
from ansible_collections.homelab.pixels.plugins.module_utils.pixels_module import PixelsModule
from ansible_collections.homelab.pixels.plugins.module_utils.settings import CONNECTION_KEYS, resolve


def run_many(params, check_mode):
    """(result dict, failure message or None) for validated ``params``; shared with the action plugin."""
    def settings(entry_params, names):
        return resolve(entry_params, names, config_file=params.get("config_file"))

    def connect():
        return IncusBackend(**settings(params, CONNECTION_KEYS))

    results, failure = ensure_many(params, check_mode, connect, settings)
    diff = [dict(r["diff"], before_header=r["name"], after_header=r["name"]) for r in results if r.get("diff")]
    return dict(changed=any(r.get("changed") for r in results), sandboxes=results, diff=diff), failure


def main_logic(module):
    result, failure = run_many(module.params, module.check_mode)
    if failure:
        module.fail_json(msg=failure, **result)
    module.exit_json(**result)


def main():
    module = PixelsModule(argument_spec=MANY_ARGUMENT_SPEC, supports_check_mode=True)
    module.run(main_logic)


if __name__ == "__main__":
    main()
