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
    type: str
  base:
    description:
      - Clone the newest checkpoint (by creation time) of base O(base), the instance
        C(px-base-<base>) that C(homelab.pixels.base_build) or C(homelab.pixels.site) builds.
      - The sandbox records the base in C(user.pixels.base).
      - Used only when the sandbox is created. Mutually exclusive with O(image) and O(source).
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

from ansible_collections.homelab.pixels.plugins.module_utils.backend import META_BASE
from ansible_collections.homelab.pixels.plugins.module_utils.bases import newest_checkpoint
from ansible_collections.homelab.pixels.plugins.module_utils.errors import PixelsError
from ansible_collections.homelab.pixels.plugins.module_utils.names import instance_name, parse_source
from ansible_collections.homelab.pixels.plugins.module_utils.pixels_module import WAIT_ARGS, PixelsModule

MIN_MEMORY = 64


def check_limits(module, cpu, memory):
    """Range checks before anything changes; the host's size costs one request."""
    if cpu is None and memory is None:
        return
    if cpu is not None and cpu < 1:
        raise PixelsError(f"cpu={cpu} is out of range: give at least 1 CPU.")
    if memory is not None and memory < MIN_MEMORY:
        raise PixelsError(f"memory={memory} is out of range: give at least {MIN_MEMORY} (MiB).")
    host_cpu, host_memory = module.backend.host_limits()
    if cpu is not None and cpu > host_cpu:
        raise PixelsError(f"cpu={cpu} is out of range: the Incus host has {host_cpu} CPUs.")
    if memory is not None and memory > host_memory:
        raise PixelsError(f"memory={memory} is out of range: the Incus host has {host_memory} MiB.")


def summary(sandbox):
    if sandbox is None:
        return {"state": "absent"}
    return {"state": sandbox.status, "cpu": sandbox.cpu, "memory": sandbox.memory}


def create(module, instance, state, source):
    params = module.params
    start = state != "stopped"
    metadata = None
    if params["base"]:
        source = newest_checkpoint(module.backend, params["base"])  # fails clearly when not built
        metadata = {META_BASE: params["base"]}
    if source:
        source_instance, label = source
        check_limits(module, params["cpu"], params["memory"])
        if module.check_mode:
            module.backend.list_checkpoints(source_instance)  # fails clearly when missing
            if label and label not in [c.label for c in module.backend.list_checkpoints(source_instance)]:
                raise PixelsError(f"source={params['source']!r}: no checkpoint {label!r}.")
            return
        module.backend.clone_sandbox(instance, source_instance, label, cpu=params["cpu"],
                                     memory=params["memory"], description=params["description"],
                                     start=start, metadata=metadata)
    else:
        settings = module.settings("image", "image_server", "cpu", "memory", "pool")
        check_limits(module, settings["cpu"], settings["memory"])
        if module.check_mode:
            return
        module.backend.create_sandbox(instance, settings["image"], settings["image_server"],
                                      cpu=settings["cpu"], memory=settings["memory"],
                                      pool=settings["pool"], description=params["description"],
                                      start=start)
    if start and params["wait"]:
        try:
            module.backend.wait_for_address(instance, params["wait_timeout"])
        except PixelsError as exc:
            module.backend.delete(instance)
            raise PixelsError(f"{exc.message} The new sandbox was removed again.")


def reconcile(module, instance, sandbox, state):
    """Bring an existing sandbox to the wanted limits and state; True when changed."""
    params = module.params
    backend = module.backend
    changes = {}
    if params["cpu"] is not None and params["cpu"] != sandbox.cpu:
        changes["cpu"] = params["cpu"]
    if params["memory"] is not None and params["memory"] != sandbox.memory:
        changes["memory"] = params["memory"]
    if changes:
        check_limits(module, changes.get("cpu"), changes.get("memory"))
    action = None
    if state == "started" and not sandbox.running:
        action = "start"
    elif state == "stopped" and sandbox.status != "stopped":
        action = "stop"
    elif state == "restarted":
        action = "restart" if sandbox.running else "start"
    if module.check_mode or not (changes or action):
        return bool(changes or action)
    if changes:
        backend.set_limits(instance, **changes)
    if action == "start":
        backend.start(instance)
    elif action == "stop":
        backend.stop(instance, params["stop_timeout"])
    elif action == "restart":
        backend.restart(instance, params["stop_timeout"])
    if action in ("start", "restart") and params["wait"]:
        backend.wait_for_address(instance, params["wait_timeout"])
    return True


def predicted(module, sandbox, state):
    """What check mode expects the sandbox to look like afterwards."""
    params = module.params
    after = summary(sandbox) if sandbox else {"state": "stopped", "cpu": None, "memory": None}
    if sandbox is None and not (params["source"] or params["base"]):
        defaults = module.settings("cpu", "memory")
        after.update(cpu=defaults["cpu"], memory=defaults["memory"])
    for key in ("cpu", "memory"):
        if params[key] is not None:
            after[key] = params[key]
    if state in ("started", "restarted") or (state == "present" and sandbox is None):
        after["state"] = "running"
    elif state == "stopped":
        after["state"] = "stopped"
    return after


def main_logic(module):
    params = module.params
    state = params["state"]
    instance = instance_name(params["name"])
    source = parse_source(params["source"]) if params["source"] else None
    if source and source[0] == instance:
        raise PixelsError(f"source={params['source']!r} is the sandbox itself: clone from another sandbox.")
    if params["wait_timeout"] < 1 or params["stop_timeout"] < 0:
        raise PixelsError("wait_timeout must be at least 1 and stop_timeout at least 0 (seconds).")

    backend = module.backend
    sandbox = backend.get_sandbox(instance)
    before = summary(sandbox)

    if state == "absent":
        if sandbox is not None and not module.check_mode:
            backend.delete(instance)
        module.exit_json(changed=sandbox is not None, sandbox={},
                         diff={"before": before, "after": {"state": "absent"}})

    if sandbox is None:
        create(module, instance, state, source)
        changed = True
    else:
        changed = reconcile(module, instance, sandbox, state)

    if module.check_mode:
        after = predicted(module, sandbox, state)
        result = sandbox.as_dict() if sandbox else {"name": params["name"], "instance": instance}
    else:
        current = backend.get_sandbox(instance)
        after = summary(current)
        result = current.as_dict() if current else {}
    module.exit_json(changed=changed, sandbox=result, diff={"before": before, "after": after})


def main():
    module = PixelsModule(
        argument_spec=dict(
            name=dict(type="str", required=True),
            state=dict(type="str", default="started",
                       choices=["present", "started", "stopped", "restarted", "absent"]),
            image=dict(type="str"),
            image_server=dict(type="str"),
            source=dict(type="str"),
            base=dict(type="str"),
            cpu=dict(type="int"),
            memory=dict(type="int"),
            pool=dict(type="str"),
            description=dict(type="str", default=""),
            **WAIT_ARGS,
            stop_timeout=dict(type="int", default=30),
        ),
        mutually_exclusive=[("image", "source", "base")],
        supports_check_mode=True,
    )
    module.run(main_logic)


if __name__ == "__main__":
    main()
