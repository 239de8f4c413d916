#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, homelab.pixels contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: pixels_site_plan
short_description: Check a description of bases and sandboxes and plan what to build
version_added: 0.2.0
description:
  - Validates the O(bases) and O(sandboxes) of a site (usually C(pixels_bases) and
    C(pixels_sandboxes)) before anything is created - unknown keys, wrong types, bases that
    are both from an image and from a parent, unknown parents, cycles, missing bases - and
    names the entry, the key or the chain in its error.
  - Reads the bases already built on Incus (one request) and returns the bases to build,
    parents first, and the sandboxes with their defaults filled in.
  - Changes nothing; the C(homelab.pixels.site) role and playbooks use it.
  - Runs on the controller, in the C(ansible-playbook) process (an action plugin), which saves
    starting a module on every run of the site; that Python needs pylxd, as for the other
    modules on localhost.
author:
  - homelab.pixels developers (@homelab-pixels)
options:
  bases:
    description:
      - Bases, each a dict with C(name), C(image) or C(from), and optionally C(setup) (a
        task file run inside the base), C(script) (a shell script run as root inside it),
        C(description) and C(rebuild).
      - A value that is not a list is refused with the name in O(bases_var).
    type: raw
    default: []
  sandboxes:
    description:
      - Sandboxes, each a dict with C(name); one of C(base), C(image) and C(source); then
        C(cpu), C(memory), C(egress) (C(mode), C(allow), C(deny), C(domains)), C(provision)
        and C(devtools) (booleans or option dicts), C(state) and C(description).
      - A value that is not a list is refused with the name in O(sandboxes_var).
    type: raw
    default: []
  builtin_bases:
    description:
      - The built-in bases, like O(bases); one without C(image) and C(from) takes O(base_image).
    type: list
    elements: dict
    default: []
  base_image:
    description:
      - Image of the built-in bases without a parent.
    type: str
    default: ubuntu/24.04
  directory:
    description:
      - Directory that relative C(setup) and C(script) paths start from.
    type: path
    default: .
  rebuild:
    description:
      - Names of bases to build again even when they are built.
    type: list
    elements: str
    default: []
  wanted:
    description:
      - Bases to build when they are not built, with what they need, whatever O(build) says.
    type: list
    elements: str
    default: []
  build:
    description:
      - V(all) plans every declared base and the built-in bases the others need;
        V(needed) only what O(sandboxes), O(wanted) and O(rebuild) need.
    type: str
    choices: [all, needed]
    default: all
  bases_var:
    description:
      - Name used for O(bases) in error messages.
    type: str
    default: pixels_bases
  sandboxes_var:
    description:
      - Name used for O(sandboxes) in error messages.
    type: str
    default: pixels_sandboxes
requirements:
  - pylxd >= 2.4 in the Python that runs ansible-playbook
notes:
  - Connection options come from the task, then the E(PIXELS_*) environment variables, then
    the pixels CLI's C(config.toml), as for the other modules (and C(module_defaults) with
    C(group/homelab.pixels.pixels)).
extends_documentation_fragment:
  - homelab.pixels.connection
  - homelab.pixels.attributes
  - homelab.pixels.attributes.info_module
seealso:
  - module: homelab.pixels.pixels_base
  - module: homelab.pixels.pixels_container
"""

EXAMPLES = r"""
- name: Check the site and plan it
  homelab.pixels.pixels_site_plan:
    bases:
      - name: web
        from: node
        setup: bases/web.yml
    sandboxes:
      - name: agent1
        base: web
        egress: {mode: agent}
    base_image: debian/12
  register: plan
"""

RETURN = r"""
bases:
  description: Bases to build, parents first.
  returned: always
  type: list
  elements: dict
  sample:
    - {name: dev, instance: px-base-dev, image: debian/12, from: null, setup: /path/dev.yml,
       script: null, description: pixels base dev, builtin: true, recreate: false}
sandboxes:
  description:
    - The sandboxes with defaults filled in. C(provision) and C(devtools) are V(null) when
      off and an option dict (maybe empty) when on; C(base_pending) says that the base is
      built in this run; C(wave) is 2 for clones of sandboxes declared in the same list.
  returned: always
  type: list
  elements: dict
existing:
  description: Bases built on Incus before the run, with their number of checkpoints.
  returned: always
  type: dict
  sample: {dev: 1}
sandboxes_present:
  description: Names of the sandboxes that exist on Incus (before the run).
  returned: always
  type: list
  elements: str
"""

from ansible_collections.homelab.pixels.plugins.module_utils.bases import base_of, plan
from ansible_collections.homelab.pixels.plugins.module_utils.pixels_module import PixelsModule


def site_plan(backend, params):
    """The module's result (without changed) for validated ``params``."""
    existing = {}
    present = []
    for sandbox in backend.list_sandboxes():
        base = base_of(sandbox)
        if base:
            existing[base] = len(sandbox.checkpoints)
        else:
            present.append(sandbox.name)
    result = plan(params["bases"], params["sandboxes"], builtin_bases=params["builtin_bases"],
                  existing=existing, base_image=params["base_image"], directory=params["directory"],
                  rebuild=params["rebuild"], build=params["build"], wanted=params["wanted"], bases_var=params["bases_var"],
                  sandboxes_var=params["sandboxes_var"])
    return dict(existing=existing, sandboxes_present=sorted(present), **result)


def main_logic(module):
    module.exit_json(changed=False, **site_plan(module.backend, module.params))


ARGUMENT_SPEC = dict(
    bases=dict(type="raw", default=[]),
    sandboxes=dict(type="raw", default=[]),
    builtin_bases=dict(type="list", elements="dict", default=[]),
    base_image=dict(type="str", default="ubuntu/24.04"),
    directory=dict(type="path", default="."),
    rebuild=dict(type="list", elements="str", default=[]),
    wanted=dict(type="list", elements="str", default=[]),
    build=dict(type="str", default="all", choices=["all", "needed"]),
    bases_var=dict(type="str", default="pixels_bases"),
    sandboxes_var=dict(type="str", default="pixels_sandboxes"),
)


def main():
    module = PixelsModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    module.run(main_logic)


if __name__ == "__main__":
    main()
