# -*- coding: utf-8 -*-
# Copyright: (c) 2026, homelab.pixels contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Values from outside (a sandbox's description and user.* keys, ...) as inventory variables:
what could be a template is marked unsafe, everything else stays a plain value.

Marking every string unsafe keeps the controller safe too, but ansible-core 2.19 serializes each
untrusted string of ``ansible-inventory --list`` as ``{"__ansible_unsafe": "..."}``, and AWX and
Automation Platform store those dicts as host variables (``ansible_host`` included).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Set

from ansible.module_utils.common.collections import is_sequence
from ansible.utils.unsafe_proxy import wrap_var

try:  # ansible-core >= 2.19: a string is a template only when tagged trusted
    from ansible.template import trust_as_template
except ImportError:  # 2.17, 2.18: every str is a template unless it is AnsibleUnsafe
    trust_as_template = None

# Every Jinja delimiter opens with "{" ({{, {%, {#); Ansible reads a string that starts with
# "#jinja2:" as a template whose header sets other delimiters (no "{" needed at all); "%" and "#"
# are Jinja's line statement and line comment prefixes. A string with none of these cannot be
# rendered into anything but itself.
_TEMPLATE_CHARS = re.compile(r"[{}%#]")


def could_template(text):
    """Whether a string could be (or become, with a Jinja header) a template."""
    return _TEMPLATE_CHARS.search(text) is not None


def template_safe(value):
    """A copy of ``value`` (dicts, lists, sets, strings, scalars) in which every string that could
    template, keys included, is unsafe and every other string is a plain, trusted string."""
    if isinstance(value, Mapping):
        return {template_safe(key): template_safe(item) for key, item in value.items()}
    if isinstance(value, Set):
        return {template_safe(item) for item in value}
    if isinstance(value, str):
        if could_template(value):
            return wrap_var(value)
        plain = str.__str__(value)  # drops AnsibleUnsafeText (2.17/2.18) and any tags
        return trust_as_template(plain) if trust_as_template else plain
    if is_sequence(value):
        return [template_safe(item) for item in value]
    return value
