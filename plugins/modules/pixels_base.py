#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, homelab.pixels contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: pixels_base
short_description: Create or remove the container of a pixels base
version_added: 0.2.0
description:
  - A base C(dev) is the container C(px-base-dev), marked with C(user.pixels.base=dev),
    that is set up once and checkpointed; sandboxes clone its newest checkpoint
    (M(homelab.pixels.pixels_container) with O(homelab.pixels.pixels_container#module:base)).
  - This module makes the container, from an image or from the newest checkpoint of a
    parent base, started and with an address, ready for its setup. The setup and the
    checkpoint are the next tasks; the C(homelab.pixels.base_build) and
    C(homelab.pixels.site) playbooks do all of it.
  - A base counts as built when its container has at least one checkpoint.
  - On any failure while creating, the half-made container is removed.
author:
  - homelab.pixels developers (@homelab-pixels)
options:
  name:
    description:
      - Base name, such as V(dev). The container is C(px-base-dev).
    type: str
    required: true
  state:
    description:
      - V(present) creates the container when it does not exist and leaves an existing one
        as it is.
      - V(absent) deletes the container with all its checkpoints. Sandboxes cloned from it
        are not affected.
    type: str
    choices: [present, absent]
    default: present
  image:
    description:
      - Image of a base without a parent, as for M(homelab.pixels.pixels_container).
      - Exactly one of O(image) and O(from) is needed to create the base.
    type: str
  image_server:
    description:
      - Simplestreams server for O(image) when it is not a local image; falls back as for
        M(homelab.pixels.pixels_container).
    type: str
  from:
    description:
      - Parent base. The container is cloned from the newest checkpoint of the parent. Later
        changes to the parent do not reach this base until it is rebuilt.
    type: str
    aliases: [parent]
  cpu:
    description:
      - CPU limit while the base is set up; sandboxes from it get their own.
    type: int
  memory:
    description:
      - Memory limit in MiB while the base is set up.
    type: int
  description:
    description:
      - Description stored on the new container.
    type: str
    default: ""
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
      - Shows whether the base container exists before and after.
  idempotent:
    support: full
seealso:
  - module: homelab.pixels.pixels_container
  - module: homelab.pixels.pixels_checkpoint
"""

EXAMPLES = r"""
- name: Base dev from an image
  homelab.pixels.pixels_base:
    name: dev
    image: debian/12

- name: Base py from the newest checkpoint of dev
  homelab.pixels.pixels_base:
    name: py
    from: dev

- name: Checkpoint it after its setup (the base is now built)
  homelab.pixels.pixels_checkpoint:
    name: px-base-py

- name: Remove a base
  homelab.pixels.pixels_base:
    name: py
    state: absent
"""

RETURN = r"""
base:
  description: The base after the task; empty when it is absent.
  returned: always
  type: dict
  contains:
    name:
      description: Base name.
      type: str
      sample: dev
    instance:
      description: Incus instance of the base.
      type: str
      sample: px-base-dev
    status:
      description: Instance status in lower case.
      type: str
      sample: running
    parent:
      description: Parent base, if it was cloned from one.
      type: str
      sample: dev
    checkpoints:
      description: Checkpoint labels, oldest first.
      type: list
      elements: str
      sample: [px-20261123-031500]
    newest:
      description: The newest checkpoint, which new sandboxes clone; empty when not built.
      type: str
      sample: px-20261123-031500
    built:
      description: Whether the base has a checkpoint.
      type: bool
      sample: true
"""

from ansible_collections.homelab.pixels.plugins.module_utils.backend import META_BASE
from ansible_collections.homelab.pixels.plugins.module_utils.bases import base_instance, newest_checkpoint
from ansible_collections.homelab.pixels.plugins.module_utils.container import check_limits, removed_after
from ansible_collections.homelab.pixels.plugins.module_utils.errors import PixelsError
from ansible_collections.homelab.pixels.plugins.module_utils.pixels_module import WAIT_ARGS, PixelsModule

META_PARENT = "user.pixels.base.parent"


def describe(backend, name, instance):
    sandbox = backend.get_sandbox(instance)
    if sandbox is None:
        return {}
    labels = [c.label for c in backend.list_checkpoints(instance)]
    return {"name": name, "instance": instance, "status": sandbox.status,
            "parent": sandbox.metadata.get(META_PARENT) or "", "checkpoints": labels,
            "newest": labels[-1] if labels else "", "built": bool(labels)}


def main_logic(module):
    params = module.params
    name = params["name"]
    instance = base_instance(name)
    backend = module.backend
    before = describe(backend, name, instance)
    exists = bool(before)

    if params["state"] == "absent":
        if exists and not module.check_mode:
            backend.delete(instance)
        module.exit_json(changed=exists, base={},
                         diff={"before": {"exists": exists}, "after": {"exists": False}})

    if exists:
        module.exit_json(changed=False, base=before, diff={"before": {"exists": True}, "after": {"exists": True}})
    if bool(params["image"]) == bool(params["from"]):
        raise PixelsError(f"Base {name!r} does not exist: give image (such as debian/12) or from (a parent base) to create it.")
    if params["wait_timeout"] < 1:
        raise PixelsError(f"wait_timeout={params['wait_timeout']} is out of range: give at least 1 (seconds).")
    metadata = {META_BASE: name}
    if params["from"]:
        source, label = newest_checkpoint(backend, params["from"], "from")
        metadata[META_PARENT] = params["from"]
        check_limits(module, params["cpu"], params["memory"])
    else:
        limits = module.settings("cpu", "memory")
        check_limits(module, limits["cpu"], limits["memory"])
    if not module.check_mode:
        if params["from"]:
            backend.clone_sandbox(instance, source, label, cpu=params["cpu"], memory=params["memory"],
                                  description=params["description"], metadata=metadata)
        else:
            settings = module.settings("image", "image_server", "cpu", "memory", "pool")
            backend.create_sandbox(instance, settings["image"], settings["image_server"], cpu=settings["cpu"],
                                   memory=settings["memory"], pool=settings["pool"],
                                   description=params["description"], metadata=metadata)
        if params["wait"]:
            try:
                backend.wait_for_address(instance, params["wait_timeout"])
            except PixelsError as exc:
                raise removed_after(backend, instance, exc, "base container") from None
    after = describe(backend, name, instance) if not module.check_mode else {"name": name, "instance": instance}
    module.exit_json(changed=True, base=after, diff={"before": {"exists": False}, "after": {"exists": True}})


def main():
    module = PixelsModule(
        argument_spec={
            "name": dict(type="str", required=True),
            "state": dict(type="str", default="present", choices=["present", "absent"]),
            "image": dict(type="str"),
            "image_server": dict(type="str"),
            "from": dict(type="str", aliases=["parent"]),
            "cpu": dict(type="int"),
            "memory": dict(type="int"),
            "description": dict(type="str", default=""),
            **WAIT_ARGS,
        },
        mutually_exclusive=[("image", "from")],
        supports_check_mode=True,
    )
    module.run(main_logic)


if __name__ == "__main__":
    main()
