# -*- coding: utf-8 -*-
# Copyright: homelab.pixels contributors
# MIT License (see LICENSE)
"""The one exception type our plugins turn into a clear failure message."""

from __future__ import annotations


class PixelsError(Exception):
    """A failure with a message fit for the user: what went wrong and the fix."""

    def __init__(self, message, **details):
        super().__init__(message)
        self.message = message
        self.details = details
