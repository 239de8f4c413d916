# -*- coding: utf-8 -*-
# Copyright: (c) 2026, homelab.pixels contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The backend interface every sandbox host (Incus, TrueNAS) implements."""

from __future__ import annotations

import abc
from collections import namedtuple
from dataclasses import asdict, dataclass, field
from typing import List, Optional

from ansible_collections.homelab.pixels.plugins.module_utils.names import sandbox_name

# Metadata we keep on the instance itself, so any controller can read it back.
META_IMAGE = "user.pixels.image"
META_SOURCE = "user.pixels.source"
# Written by other tools (the pixels CLI, provisioning roles) and read back by the inventory.
META_BASE = "user.pixels.base"
META_EGRESS = "user.pixels.egress"


# Size of the pieces streamed in and out of a sandbox (stdin, files).
STREAM_CHUNK = 1 << 20
# The most a command's stdout, and its stderr, may print when the controller keeps it whole (a
# module's JSON answer, a registered result): a command that prints more is stopped and fails,
# rather than the controller buffering whatever root in a sandbox sends.
MAX_OUTPUT = 64 << 20


def output_limit_message(stream, where, limit=MAX_OUTPUT):
    amount = f"{limit >> 20} MiB" if limit >= 1 << 20 else f"{limit} bytes"
    return (f"A command in {where} printed more than {amount} on {stream}, the most the "
            f"controller keeps of a command's output: it was stopped. Write large output to a file in the "
            f"sandbox and fetch that instead.")


ExecResult = namedtuple("ExecResult", "rc stdout stderr")


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


class SandboxIO:
    """Commands and files inside sandboxes (what the connection plugin needs).

    Every Backend has these methods; they are not abstract, so that a backend without them
    still serves the modules. Names are instance names (px-...).
    """

    def exec_start(self, instance, argv, env=None, user=None, group=None, cwd=None,
                   stdout_sink=None) -> "ExecSession":
        """Start ``argv`` non-interactively with separate stdin, stdout and stderr.

        ``user``/``group`` are numeric ids inside the sandbox, ``env`` is added to the
        sandbox's default environment. ``stdout_sink``, when given, receives stdout as it
        arrives (bytes, then None at its end) instead of the session collecting it. Raises
        SandboxUnavailable when the sandbox is missing or not running.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot run commands with streams")

    def execute(self, instance, argv, stdin=b"", env=None, user=None, group=None, cwd=None) -> ExecResult:
        """Run ``argv`` with ``stdin`` (bytes or a binary file object); its exit code and output."""
        with self.exec_start(instance, argv, env=env, user=user, group=group, cwd=cwd) as session:
            if hasattr(stdin, "read"):
                for chunk in iter(lambda: stdin.read(STREAM_CHUNK), b""):
                    if not session.write(chunk):
                        break
            elif stdin:
                session.write(stdin)
            session.close_stdin()
            return session.wait()

    def put_file(self, instance, local_path, remote_path, uid=0, gid=0, mode=None):
        """Stream a local file into the sandbox, owned by uid:gid with ``mode`` (default: the
        local file's permission bits). Replaces an existing file."""
        raise NotImplementedError(f"{type(self).__name__} cannot transfer files")

    def fetch_file(self, instance, remote_path, local_path) -> int:
        """Stream a file out of the sandbox (following symlinks) to ``local_path``, replaced
        atomically by a file with the controller's default mode (0666 less the umask: never
        the sandbox's); returns the sandbox file's permission bits."""
        raise NotImplementedError(f"{type(self).__name__} cannot transfer files")

    def read_file(self, instance, remote_path, limit=1 << 20) -> Optional[bytes]:
        """A small file's content (at most ``limit`` bytes), or None when it does not exist."""
        raise NotImplementedError(f"{type(self).__name__} cannot transfer files")

    def write_file(self, instance, remote_path, data, uid=0, gid=0, mode=0o644):
        """Write ``data`` (bytes) to a file of the sandbox, also when it is stopped."""
        raise NotImplementedError(f"{type(self).__name__} cannot transfer files")

    def list_directory(self, instance, remote_path) -> Optional[List[str]]:
        """The names in a directory of the sandbox, also when it is stopped; None when missing."""
        raise NotImplementedError(f"{type(self).__name__} cannot transfer files")

    def close(self):
        """Release the connection to the host (the backend is not used afterwards)."""


class Backend(SandboxIO, abc.ABC):
    """What a module needs from a sandbox host. Names are instance names (px-...)."""

    @abc.abstractmethod
    def get_sandbox(self, instance) -> Optional[Sandbox]:
        """The sandbox, or None when it does not exist."""

    @abc.abstractmethod
    def list_sandboxes(self) -> List[Sandbox]:
        """Every px- sandbox, in a number of requests that does not grow with theirs."""

    @abc.abstractmethod
    def create_sandbox(self, instance, image, image_server=None, cpu=None, memory=None,
                       pool=None, description="", start=True, metadata=None):
        """Create from an image; removes what it made when any step fails.

        ``metadata`` adds ``user.*`` configuration keys (such as META_BASE)."""

    @abc.abstractmethod
    def clone_sandbox(self, instance, source, label=None, cpu=None, memory=None,
                      description="", start=True, metadata=None):
        """Create from a checkpoint of ``source``, or from its current state when label is None.

        The clone keeps the source's ``user.*`` keys; ``metadata`` adds or replaces some. It
        gets its own SSH host keys and machine-id before it first starts (instance_identity)."""

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


class ExecSession(abc.ABC):
    """A command running in a sandbox (from Backend.exec_start); a context manager.

    Output is collected in the background while the caller writes stdin, so neither side
    can block the other.
    """

    @abc.abstractmethod
    def write(self, data) -> bool:
        """Send bytes to the command's stdin; False when the command no longer reads it."""

    @abc.abstractmethod
    def close_stdin(self):
        """End of input for the command."""

    @abc.abstractmethod
    def output(self):
        """(stdout, stderr) received so far, as bytes."""

    @abc.abstractmethod
    def wait_output(self, timeout) -> bool:
        """Block until more output arrives or both streams end; False on timeout."""

    @abc.abstractmethod
    def wait(self) -> ExecResult:
        """Wait for the command to end; its exit code and all its output."""

    @abc.abstractmethod
    def close(self):
        """Release the streams (the command keeps running if it has not ended)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
