# -*- coding: utf-8 -*-
# Copyright: (c) 2026, homelab.pixels contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Sandbox, checkpoint and source names: the `px-` prefix and Incus' naming rules."""

from __future__ import annotations

import re
import time

from ansible_collections.homelab.pixels.plugins.module_utils.errors import PixelsError

PREFIX = "px-"

# Incus instance names are hostnames: at most 63 of [A-Za-z0-9-], no leading
# digit or hyphen, no trailing hyphen. The bare part after px- may start with a digit.
_BARE_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?$")
# Snapshot names end up in URLs and on disk: keep them to a safe alphabet.
_LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


def instance_name(name, option="name"):
    """Map a bare sandbox name (``mybox``) to its instance name (``px-mybox``).

    A name that already carries the prefix is taken as the instance name.
    """
    if not isinstance(name, str) or not name:
        raise PixelsError(f"{option} must be a non-empty string such as 'mybox'.")
    full = name if name.startswith(PREFIX) else PREFIX + name
    if len(full) > 63 or not _BARE_RE.match(full[len(PREFIX):]):
        raise PixelsError(
            f"{option}={name!r} is not a valid sandbox name: use letters, digits and "
            f"hyphens, start and end with a letter or digit, and keep it to "
            f"{63 - len(PREFIX)} characters (the instance is named '{PREFIX}<name>')."
        )
    return full


def sandbox_name(instance):
    """The bare name users see for an instance name."""
    return instance[len(PREFIX):] if instance.startswith(PREFIX) else instance


def is_sandbox(instance):
    return instance.startswith(PREFIX)


def check_label(label, option="label"):
    if not isinstance(label, str) or not _LABEL_RE.match(label):
        raise PixelsError(
            f"{option}={label!r} is not a valid checkpoint label: use 1-63 letters, "
            f"digits, '.', '_' or '-', starting with a letter or digit."
        )
    return label


def default_label(now=None):
    """``px-YYYYMMDD-HHMMSS`` in UTC, as the pixels CLI names checkpoints."""
    return time.strftime("px-%Y%m%d-%H%M%S", time.gmtime(now))


def parse_source(source, option="source"):
    """Split ``box`` or ``box:label`` into (instance name, label or None)."""
    if not isinstance(source, str) or not source or source.count(":") > 1:
        raise PixelsError(
            f"{option}={source!r} must be 'box' (clone the current state of sandbox box) "
            f"or 'box:label' (clone its checkpoint label)."
        )
    name, separator, label = source.partition(":")
    if separator and not label:
        raise PixelsError(f"{option}={source!r} names no checkpoint after ':': use 'box:label' or just 'box'.")
    return instance_name(name, option), (check_label(label, option) if label else None)
