# -*- coding: utf-8 -*-
# Copyright: (c) 2026, homelab.pixels contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: printable
short_description: Remove terminal escape sequences and control characters from text
version_added: 0.1.0
author:
  - homelab.pixels developers (@homelab-pixels)
description:
  - Removes ECMA-48 escape sequences (colours, cursor movement, window titles, hyperlinks, and the ones that make
    some terminals answer or run something) and every other control character but tab and newline.
  - For text out of a sandbox (log tails, a command's output) that a message shows the operator.
options:
  _input:
    description: The text.
    type: raw
    required: true
"""

EXAMPLES = r"""
- name: A log tail, safe for the terminal
  ansible.builtin.debug:
    msg: "{{ status.log_tail | homelab.pixels.printable }}"
"""

RETURN = r"""
_value:
  description: The text without escape sequences and control characters.
  type: str
"""

from ansible.module_utils.common.text.converters import to_text

from ansible_collections.homelab.pixels.plugins.module_utils.untrusted import printable as _printable


def printable(value):
    if value is None:
        return ""
    return _printable(value if isinstance(value, (str, bytes)) else to_text(value))


class FilterModule:
    def filters(self):
        return {"printable": printable}
