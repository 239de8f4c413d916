# -*- coding: utf-8 -*-
# Copyright: (c) 2026, homelab.pixels contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: devtools_plan
short_description: The steps of the dev tools installer for a set of tools
version_added: 0.1.0
author:
  - homelab.pixels developers (@homelab-pixels)
description:
  - Turns C(pixels_devtools_tools) (tool name to version) into the ordered steps of the C(homelab.pixels.devtools)
    installer, looking each name up in the catalog.
  - A name with a C(:) is a mise backend given directly (C(npm:prettier), C(pipx:ruff)); with the npm installer only
    C(npm:) names can be installed.
  - Fails with the name and the fix for an unknown tool, a bad version, or a tool the installer cannot install.
options:
  _input:
    description: Tool name to version (V(latest), V(lts), or a version such as V(1.2.3)).
    type: dict
    required: true
  catalog:
    description: "Known tools, name to C({mise: backend, npm: package}); an empty C(npm) package means Node itself."
    type: dict
    required: true
  installer:
    description: V(mise) or V(npm).
    type: str
    required: true
"""

EXAMPLES = r"""
- name: The installer's plan
  ansible.builtin.debug:
    msg: "{{ {'node': 'lts', 'claude': 'latest'} | homelab.pixels.devtools_plan(pixels_devtools_catalog, 'npm') }}"
"""

RETURN = r"""
_value:
  description: The tools in install order (Node first), each with its step name, mise backend, npm package and version.
  type: list
  elements: dict
  contains:
    name:
      description: Tool name as given.
      type: str
    step:
      description: Step name in the status (the name with characters other than letters, digits, C(_.-) as C(_)).
      type: str
    mise:
      description: mise backend.
      type: str
    npm:
      description: npm package; empty for Node itself.
      type: str
    version:
      description: Requested version.
      type: str
    node:
      description: Whether this is Node itself.
      type: bool
"""

import re

from ansible.errors import AnsibleFilterError

VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+~^<>=-]*$")


def devtools_plan(tools, catalog, installer):
    if installer not in ("mise", "npm"):
        raise AnsibleFilterError(f"pixels_devtools_installer={installer!r}: use mise or npm.")
    if not isinstance(tools, dict):
        raise AnsibleFilterError("pixels_devtools_tools must be a dictionary of tool name: version.")
    catalog = catalog or {}
    plan = []
    for name in sorted(tools, key=str):
        version = tools[name]
        version = "latest" if version is None else str(version)
        if not VERSION.match(version):
            raise AnsibleFilterError(f"pixels_devtools_tools.{name}: {version!r} is not a version (latest, lts, 1.2.3).")
        if name in catalog:
            entry = catalog[name] or {}
            mise, npm = str(entry.get("mise") or ""), str(entry.get("npm") or "")
            node = name == "node" or (not npm and installer == "npm")
        elif ":" in str(name):
            mise = str(name)
            npm = mise.split(":", 1)[1] if mise.startswith("npm:") else ""
            node = False
        else:
            raise AnsibleFilterError(
                f"pixels_devtools_tools: unknown tool {name!r}. Known: {', '.join(sorted(catalog))}. "
                "Add it to pixels_devtools_catalog ({mise: backend, npm: package}), or name a mise backend "
                "directly such as 'npm:prettier'.")
        if installer == "mise" and not mise:
            raise AnsibleFilterError(f"pixels_devtools_tools.{name}: no mise backend in pixels_devtools_catalog.")
        if installer == "npm" and not npm and not node:
            raise AnsibleFilterError(
                f"pixels_devtools_tools.{name}: the npm installer can only install npm packages; "
                "use pixels_devtools_installer=mise for it, or give its npm package in pixels_devtools_catalog.")
        plan.append({"name": str(name), "step": re.sub(r"[^A-Za-z0-9_.-]", "_", str(name)), "mise": mise,
                     "npm": npm, "version": version, "node": node})
    return [p for p in plan if p["node"]] + [p for p in plan if not p["node"]]


class FilterModule:
    def filters(self):
        return {"devtools_plan": devtools_plan}
