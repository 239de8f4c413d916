# -*- coding: utf-8 -*-
# Copyright: (c) 2026, homelab.pixels contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one exception type our plugins turn into a clear failure message."""

from __future__ import annotations


class PixelsError(Exception):
    """A failure with a message fit for the user: what went wrong and the fix."""

    def __init__(self, message, **details):
        super().__init__(message)
        self.message = message
        self.details = details


class SandboxUnavailable(PixelsError):
    """The sandbox does not exist or is not running: nothing can run inside it.

    ``status`` is ``missing`` or the instance's status in lower case (``stopped``, ``frozen``).
    """

    def __init__(self, message, status, **details):
        super().__init__(message, status=status, **details)
        self.status = status
