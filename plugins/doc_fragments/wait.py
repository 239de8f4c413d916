# -*- coding: utf-8 -*-
# Copyright: (c) 2026, homelab.pixels contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # Modules that start sandboxes wait for their address the same way.
    DOCUMENTATION = r"""
options:
  wait:
    description:
      - After starting a sandbox, wait until it has an IPv4 address.
    type: bool
    default: true
  wait_timeout:
    description:
      - Seconds to wait for the IPv4 address before failing.
    type: int
    default: 120
"""
