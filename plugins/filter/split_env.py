# -*- coding: utf-8 -*-
# Copyright: (c) 2026, homelab.pixels contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: split_env
short_description: Split a pixels environment into image, forwarded and session-only variables
version_added: 0.1.0
author:
  - homelab.pixels developers (@homelab-pixels)
description:
  - Takes the C(pixels_env) dictionary in the three forms of the pixels C([env]) table and sorts it by where
    each variable lives.
  - "A plain value (string, number or boolean) is an image variable, written to C(/etc/environment) in the sandbox.
    C({value: ..}) without C(session_only) is the same."
  - "C({forward: true}) is taken from the controller's environment when a session starts and never written in the
    sandbox."
  - "C({value: .., session_only: true}) is passed to sessions only and never written in the sandbox."
  - Fails with the variable's name and the fix on a bad name, an unknown key, a missing value, or a value that
    cannot be passed on one line.
options:
  _input:
    description: The C(pixels_env) dictionary; null or empty gives empty results.
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: Split the environment
  ansible.builtin.set_fact:
    pixels__env: "{{ pixels_env | homelab.pixels.split_env }}"
  vars:
    pixels_env:
      EDITOR: vim
      GITHUB_TOKEN: {forward: true}
      OPENAI_API_KEY: {value: sk-123, session_only: true}
# pixels__env.image   == {"EDITOR": "vim"}
# pixels__env.forward == ["GITHUB_TOKEN"]
# pixels__env.session == {"OPENAI_API_KEY": "sk-123"}
"""

RETURN = r"""
_value:
  description: The variables sorted by where they live. Values are strings; booleans become C(true)/C(false).
  type: dict
  contains:
    image:
      description: Variables written to C(/etc/environment), name to value.
      type: dict
    forward:
      description: Names taken from the controller's environment at session time, sorted.
      type: list
      elements: str
    session:
      description: Session-only variables, name to value.
      type: dict
"""

import re

from ansible.errors import AnsibleFilterError
from ansible.module_utils.common.text.converters import to_text

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
FORMS = "a plain value, {forward: true} or {value: .., session_only: true}"


def _scalar(name, value):
    if value is None:
        raise AnsibleFilterError(f"pixels_env.{name} has no value: give {FORMS}.")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if not isinstance(value, str):
        raise AnsibleFilterError(
            f"pixels_env.{name} is a {type(value).__name__}: give {FORMS}.")
    text = to_text(value)
    if "\n" in text or "\r" in text or "\0" in text:
        raise AnsibleFilterError(
            f"pixels_env.{name} contains a line break or NUL: environment values must fit on one line.")
    return text


def split_env(env):
    """Sort pixels_env into {"image": {}, "forward": [], "session": {}}."""
    result = {"image": {}, "forward": [], "session": {}}
    if env is None:
        return result
    if not isinstance(env, dict):
        raise AnsibleFilterError(
            f"pixels_env must be a dictionary of NAME: value, not a {type(env).__name__}.")
    for name in sorted(env, key=str):
        spec = env[name]
        if not isinstance(name, str) or not NAME.match(name):
            raise AnsibleFilterError(
                f"pixels_env: {name!r} is not a valid environment variable name "
                "(letters, digits and _, not starting with a digit).")
        if not isinstance(spec, dict):
            result["image"][name] = _scalar(name, spec)
            continue
        unknown = sorted(set(spec) - {"forward", "value", "session_only"})
        if unknown:
            raise AnsibleFilterError(
                f"pixels_env.{name} has unknown key(s) {', '.join(map(str, unknown))}: give {FORMS}.")
        if "forward" in spec:
            if set(spec) != {"forward"} or spec["forward"] is not True:
                raise AnsibleFilterError(
                    f"pixels_env.{name}: forward takes no value or session_only and must be true "
                    f"({{forward: true}}); to set a value give {{value: ..}}.")
            result["forward"].append(name)
            continue
        if "value" not in spec:
            raise AnsibleFilterError(f"pixels_env.{name} has no value: give {FORMS}.")
        session_only = spec.get("session_only", False)
        if not isinstance(session_only, bool):
            raise AnsibleFilterError(f"pixels_env.{name}.session_only must be true or false.")
        target = result["session"] if session_only else result["image"]
        target[name] = _scalar(name, spec["value"])
    return result


class FilterModule:
    def filters(self):
        return {"split_env": split_env}
