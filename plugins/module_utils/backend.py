# -*- coding: utf-8 -*-
# Copyright: (c) 2026, homelab.pixels contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The backend interface every sandbox host (Incus, TrueNAS) implements."""

from __future__ import annotations

import abc
from dataclasses import asdict, dataclass, field
from typing import List, Optional

from ansible_collections.homelab.pixels.plugins.module_utils.names import sandbox_name

# Metadata we keep on the instance itself, so any controller can read it back.
META_IMAGE = "user.pixels.image"
META_SOURCE = "user.pixels.source"
# Written by other tools (the pixels CLI, provisioning roles) and read back by the inventory.
META_BASE = "user.pixels.base"
META_EGRESS = "user.pixels.egress"


@dataclass
class Sandbox:
    instance: str
    status: str
    ipv4: List[str] = field(default_factory=list)
    ipv6: List[str] = field(default_factory=list)
    image: Optional[str] = None
    source: Optional[str] = None
    cpu: Optional[int] = None
    memory: Optional[int] = None
    created_at: Optional[str] = None
    description: str = ""
    checkpoints: List[str] = field(default_factory=list)
    metadata: dict = field(default_factory=dict)

    @property
    def name(self):
        return sandbox_name(self.instance)

    @property
    def running(self):
        return self.status == "running"

    def as_dict(self):
        data = asdict(self)
        data["name"] = self.name
        return data


@dataclass
class Checkpoint:
    label: str
    created_at: Optional[str] = None
    size: Optional[int] = None
    stateful: bool = False

    def as_dict(self):
        return asdict(self)


class Backend(abc.ABC):
    """What a module needs from a sandbox host. Names are instance names (px-...)."""

    @abc.abstractmethod
    def get_sandbox(self, instance) -> Optional[Sandbox]:
        """The sandbox, or None when it does not exist."""

    @abc.abstractmethod
    def list_sandboxes(self) -> List[Sandbox]:
        """Every px- sandbox, in one request where the host allows it."""

    @abc.abstractmethod
    def create_sandbox(self, instance, image, image_server=None, cpu=None, memory=None,
                       pool=None, description="", start=True):
        """Create from an image; removes what it made when any step fails."""

    @abc.abstractmethod
    def clone_sandbox(self, instance, source, label=None, cpu=None, memory=None,
                      description="", start=True):
        """Create from a checkpoint of ``source``, or from its current state when label is None."""

    @abc.abstractmethod
    def start(self, instance):
        pass

    @abc.abstractmethod
    def stop(self, instance, timeout=30):
        """Stop cleanly within ``timeout`` seconds, then force."""

    @abc.abstractmethod
    def restart(self, instance, timeout=30):
        pass

    @abc.abstractmethod
    def delete(self, instance):
        """Delete the sandbox and all its checkpoints, stopping it first."""

    @abc.abstractmethod
    def set_limits(self, instance, cpu=None, memory=None):
        pass

    @abc.abstractmethod
    def host_limits(self):
        """(cpu count, memory in MiB) of the host, for range checks."""

    @abc.abstractmethod
    def wait_for_address(self, instance, timeout) -> Sandbox:
        """Block until the sandbox has an IPv4 address; raise on timeout."""

    @abc.abstractmethod
    def run(self, instance, argv, timeout=None) -> int:
        """Run a command inside the sandbox; its exit code."""

    @abc.abstractmethod
    def list_checkpoints(self, instance) -> List[Checkpoint]:
        pass

    @abc.abstractmethod
    def create_checkpoint(self, instance, label):
        pass

    @abc.abstractmethod
    def delete_checkpoint(self, instance, label):
        pass

    @abc.abstractmethod
    def restore_checkpoint(self, instance, label):
        """Stop, roll back, and start again when it was running."""
