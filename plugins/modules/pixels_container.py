#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, homelab.pixels contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: pixels_container
short_description: Create, start, stop and destroy pixels sandboxes (Incus containers)
version_added: 0.1.0
description:
  - Manages a sandbox, an Incus container named C(px-<name>), on a local or remote Incus.
  - A sandbox is created from an image, or cloned from another sandbox's checkpoint or
    current state. Clones get fresh MAC addresses (the source's C(volatile.*) keys are dropped).
  - After starting, the module waits until the sandbox has an IPv4 address.
  - On any failure while creating, the half-made sandbox is removed; nothing that existed
    before the task is touched.
author:
  - homelab.pixels developers (@homelab-pixels)
options:
  name:
    description:
      - Sandbox name, such as V(mybox). The Incus instance is C(px-mybox).
      - A name that already starts with C(px-) is taken as the instance name.
    type: str
    required: true
  state:
    description:
      - V(present) makes sure the sandbox exists; a new one is started, an existing one is
        left as it is.
      - V(started) and V(stopped) create the sandbox when missing and put it in that state.
      - V(restarted) restarts it (or starts it) and always reports a change.
      - V(absent) destroys the sandbox with all its checkpoints.
    type: str
    choices: [present, started, stopped, restarted, absent]
    default: started
  image:
    description:
      - Image to create the sandbox from, as a local alias (V(debian/12)), a fingerprint,
        or an alias on O(image_server).
      - Used only when the sandbox is created. Mutually exclusive with O(source).
      - Falls back to E(PIXELS_DEFAULT_IMAGE), then C(image) in the C([defaults]) section of
        the pixels config file, then V(ubuntu/24.04).
    type: str
  image_server:
    description:
      - Simplestreams image server used when O(image) is not a local image.
      - Falls back to E(PIXELS_DEFAULT_IMAGE_SERVER), then C(image_server) in C([defaults]),
        then V(https://images.linuxcontainers.org).
    type: str
  source:
    description:
      - Clone instead of creating from an image. V(box) clones the current state of sandbox
        C(box) through a temporary snapshot, removed afterwards; V(box:label) clones its
        checkpoint C(label).
      - Used only when the sandbox is created. Mutually exclusive with O(image) and O(base).
      - A clone gets its own SSH host keys (of the types its source has) and machine-id,
        written before it first starts; everything else is the source's.
    type: str
  base:
    description:
      - Clone the newest checkpoint (by creation time) of base O(base), the instance
        C(px-base-<base>) that C(homelab.pixels.base_build) or C(homelab.pixels.site) builds.
      - The sandbox records the base in C(user.pixels.base).
      - Used only when the sandbox is created. Mutually exclusive with O(image) and O(source).
      - Like a clone from O(source), the sandbox gets its own SSH host keys and machine-id.
    type: str
    version_added: 0.2.0
  cpu:
    description:
      - Number of CPUs (C(limits.cpu)), 1 up to the host's count.
      - Given here, it is also reconciled on an existing sandbox, with a diff.
      - For a new sandbox from an image it falls back to E(PIXELS_DEFAULT_CPU), then C(cpu) in
        C([defaults]), then V(2). A clone keeps its source's value unless set here.
    type: int
  memory:
    description:
      - Memory limit in MiB (C(limits.memory)), 64 up to the host's memory.
      - Given here, it is also reconciled on an existing sandbox, with a diff.
      - For a new sandbox from an image it falls back to E(PIXELS_DEFAULT_MEMORY), then
        C(memory) in C([defaults]), then V(2048). A clone keeps its source's value unless set here.
    type: int
  pool:
    description:
      - Storage pool of the root disk of a new sandbox from an image; by default the one in
        the C(default) profile.
      - Falls back to E(PIXELS_DEFAULT_POOL), then C(pool) in C([defaults]).
    type: str
  description:
    description:
      - Description stored on a new instance.
    type: str
    default: ""
  stop_timeout:
    description:
      - Seconds to wait for a clean shutdown before the sandbox is stopped by force.
    type: int
    default: 30
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
      - Shows the state, CPU and memory before and after.
  idempotent:
    support: partial
    details:
      - V(restarted) always restarts and reports a change; every other state reports no
        change when the sandbox already matches.
seealso:
  - module: homelab.pixels.pixels_container_info
  - module: homelab.pixels.pixels_checkpoint
"""

EXAMPLES = r"""
- name: Create and start a sandbox from a local image
  homelab.pixels.pixels_container:
    name: mybox
    image: debian/12
    cpu: 2
    memory: 2048

- name: Clone five workers from a checkpoint
  homelab.pixels.pixels_container:
    name: "worker{{ item }}"
    source: mybox:ready
  loop: "{{ range(1, 6) | list }}"

- name: A sandbox from the newest checkpoint of base dev
  homelab.pixels.pixels_container:
    name: task1
    base: dev

- name: Clone the current state of a sandbox
  homelab.pixels.pixels_container:
    name: experiment
    source: mybox

- name: Give a sandbox more memory (applied live)
  homelab.pixels.pixels_container:
    name: mybox
    memory: 4096

- name: Stop it
  homelab.pixels.pixels_container:
    name: mybox
    state: stopped

- name: Destroy it with all its checkpoints
  homelab.pixels.pixels_container:
    name: mybox
    state: absent

- name: A sandbox on a remote Incus over HTTPS
  homelab.pixels.pixels_container:
    name: remotebox
    image: ubuntu/24.04
    remote: https://incus.lan:8443
    client_cert: ~/.config/pixels/client.crt
    client_key: ~/.config/pixels/client.key
    server_cert: ~/.config/pixels/server.crt
"""

RETURN = r"""
sandbox:
  description: The sandbox after the task; empty when it is absent.
  returned: always
  type: dict
  contains:
    name:
      description: Bare sandbox name.
      type: str
      sample: mybox
    instance:
      description: Incus instance name.
      type: str
      sample: px-mybox
    status:
      description: Instance status in lower case.
      type: str
      sample: running
    ipv4:
      description: Global IPv4 addresses.
      type: list
      elements: str
      sample: [10.123.0.57]
    ipv6:
      description: Global IPv6 addresses.
      type: list
      elements: str
      sample: []
    image:
      description: Image the sandbox (or its first ancestor) was created from.
      type: str
      sample: debian/12
    source:
      description: V(box) or V(box:label) the sandbox was cloned from, if any.
      type: str
      sample: mybox:ready
    cpu:
      description: CPU limit.
      type: int
      sample: 2
    memory:
      description: Memory limit in MiB.
      type: int
      sample: 2048
    created_at:
      description: Creation time reported by Incus.
      type: str
      sample: "2026-11-22T23:50:01.123456789Z"
    description:
      description: Instance description.
      type: str
      sample: ""
    checkpoints:
      description: Checkpoint labels.
      type: list
      elements: str
      sample: [ready]
    metadata:
      description: The instance's C(user.*) configuration keys.
      type: dict
      sample: {"user.pixels.image": "debian/12"}
"""

from ansible_collections.homelab.pixels.plugins.module_utils.container import ARGUMENT_SPEC, MUTUALLY_EXCLUSIVE, ensure
from ansible_collections.homelab.pixels.plugins.module_utils.pixels_module import PixelsModule


def main_logic(module):
    module.exit_json(**ensure(module))


def main():
    module = PixelsModule(argument_spec=ARGUMENT_SPEC, mutually_exclusive=MUTUALLY_EXCLUSIVE, supports_check_mode=True)
    module.run(main_logic)


if __name__ == "__main__":
    main()
