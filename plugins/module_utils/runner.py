# -*- coding: utf-8 -*-
# Copyright: (c) 2026, homelab.pixels contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A command runner that stays inside the sandbox for the life of a connection.

Every Incus exec costs the daemon a request, three websockets and a fresh ``incusd forkexec``
process: tens of milliseconds, more on a busy host, where ssh's ControlMaster costs a fork.
When a connection runs several commands (a loop, a task without pipelining), the plugin starts
this small Python program once, as root, over one exec, and sends it the commands: it starts
each one with its user, groups, environment and directory, and relays stdin, stdout, stderr
and the exit code as frames over that exec's own stdin and stdout.

Frames are a kind byte, a big-endian 32-bit length and the payload. To the runner: ``S`` a
command (JSON), ``I`` stdin data, ``E`` end of stdin, ``K`` kill the command. From it: ``H``
hello (JSON) once, ``O``/``R`` stdout/stderr data, ``X`` the exit code. One command at a time.

The runner is started as root inside the sandbox, so root there can replace it (or the python3
it runs in): nothing it sends is trusted. A frame from it may hold at most MAX_FRAME bytes (the
runner's own are at most 64 KiB); once a frame has begun, the rest of it must arrive within the
frame deadline (the connection's timeout); an unknown kind, a bad hello or exit code, a frame
too large or too slow breaks the runner at once with a message saying so, and the command
fails instead of the controller buffering or waiting. A command's captured output is bounded
by backend.MAX_OUTPUT.
"""

from __future__ import annotations

import json
import struct
import threading
import time

from ansible_collections.homelab.pixels.plugins.module_utils.backend import (
    MAX_OUTPUT,
    STREAM_CHUNK,
    ExecResult,
    ExecSession,
    output_limit_message,
)
from ansible_collections.homelab.pixels.plugins.module_utils.errors import PixelsError

VERSION = 1
_HEADER = struct.Struct(">cI")
# The largest frame taken from the runner: its data frames are at most 64 KiB.
MAX_FRAME = 1 << 20
# Seconds the rest of a frame may take once it has begun (the connection passes its timeout).
FRAME_DEADLINE = 30
# What the runner sends: hello, stdout, stderr, exit code.
_KINDS = (b"H", b"O", b"R", b"X")
_EXIT_DIGITS = 10  # digits of an exit code

# Runs inside the sandbox with ``python3 -I -c``: Python 3.6 or later, standard library only.
RUNNER_SOURCE = r'''
import errno, json, os, signal, struct, subprocess, sys, threading
HEADER = struct.Struct(">cI")
IN, OUT, LOCK = sys.stdin.buffer, sys.stdout.buffer, threading.Lock()

def send(kind, data=b""):
    with LOCK:
        OUT.write(HEADER.pack(kind, len(data)) + data)
        OUT.flush()

def receive():
    head = IN.read(HEADER.size)
    if len(head) < HEADER.size:
        sys.exit(0)
    kind, size = HEADER.unpack(head)
    data = IN.read(size) if size else b""
    if len(data) < size:
        sys.exit(0)
    return kind, data

def pump(stream, kind):
    while True:
        chunk = os.read(stream.fileno(), 65536)
        if not chunk:
            return
        send(kind, chunk)

class Command(object):
    def __init__(self, request):
        self.done = threading.Event()
        self.process = None
        uid, gid, groups = request.get("uid"), request.get("gid"), request.get("groups")
        def demote():
            if groups is not None:
                os.setgroups(groups)
            if gid is not None:
                os.setgid(gid)
            if uid is not None:
                os.setuid(uid)
        env = dict(os.environ)
        env.update(request.get("env") or {})
        cwd = request.get("cwd")
        if not cwd or not os.path.isdir(cwd):
            cwd = os.getcwd() if uid in (None, 0) else "/"
        try:
            self.process = subprocess.Popen(
                request["argv"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env=env, cwd=cwd, preexec_fn=demote, start_new_session=True, close_fds=True)
        except OSError as exc:
            send(b"R", ("%s: %s\n" % (request["argv"][0], exc.strerror)).encode())
            send(b"X", b"127" if exc.errno == errno.ENOENT else b"126")
            self.done.set()
            return
        threading.Thread(target=self.finish).start()

    def finish(self):
        pumps = [threading.Thread(target=pump, args=(self.process.stdout, b"O")),
                 threading.Thread(target=pump, args=(self.process.stderr, b"R"))]
        for thread in pumps:
            thread.start()
        for thread in pumps:
            thread.join()
        code = self.process.wait()
        send(b"X", str(code if code >= 0 else 128 - code).encode())
        self.done.set()

    def write(self, data):
        if self.process and not self.process.stdin.closed:
            try:
                self.process.stdin.write(data)
                self.process.stdin.flush()
            except (OSError, ValueError):
                self.close()

    def close(self):
        if self.process:
            try:
                self.process.stdin.close()
            except (OSError, ValueError):
                pass

    def kill(self):
        if self.process and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except OSError:
                pass
        self.close()

# SIGPIPE stays ignored (Python's default): a command that exits without reading all its input
# must give this program an EPIPE, not kill it. Commands get the default back (subprocess).
send(b"H", json.dumps({"version": @VERSION@, "pid": os.getpid()}).encode())
command = None
while True:
    kind, data = receive()
    if kind == b"S":
        if command:
            command.done.wait()
        command = Command(json.loads(data.decode("utf-8")))
    elif command and kind == b"I":
        command.write(data)
    elif command and kind == b"E":
        command.close()
    elif command and kind == b"K":
        command.kill()
'''.replace("@VERSION@", str(VERSION))


class CommandRunner:
    """The controller's side of the runner: starts it, then runs commands through it.

    ``start(sink)`` starts ``python3 -I -c RUNNER_SOURCE`` in the sandbox and returns its
    ExecSession, calling ``sink`` with its stdout as it arrives (None at the end).
    """

    def __init__(self, start, where="the sandbox", frame_deadline=FRAME_DEADLINE):
        self._where = where
        self._frame_deadline = frame_deadline
        self._partial_since = None  # when the frame that is still incomplete began
        self._buffer = bytearray()
        self._lock = threading.Condition()
        self._hello = None
        self._ended = False
        self._broken = None
        self._current = None
        self._session = start(self._receive)

    # -- frames from the runner (the session's reader thread) ----------------------------

    def _receive(self, data):
        with self._lock:
            if data is None:
                self._ended = True
                if self._current is not None:
                    self._current.lost()
                self._lock.notify_all()
                return
            if self._broken:
                return  # whatever a broken runner still sends is dropped, not buffered
            self._buffer += data
            while len(self._buffer) >= _HEADER.size:
                kind, size = _HEADER.unpack_from(self._buffer)
                problem = self._frame_problem(kind, size)
                if problem:
                    self._break(problem)
                    return
                if len(self._buffer) < _HEADER.size + size:
                    break
                payload = bytes(self._buffer[_HEADER.size:_HEADER.size + size])
                del self._buffer[:_HEADER.size + size]
                self._partial_since = None
                problem = self._dispatch(kind, payload)
                if problem:
                    self._break(problem)
                    return
            if self._buffer and self._partial_since is None:
                self._partial_since = time.monotonic()
            self._lock.notify_all()

    def _frame_problem(self, kind, size):
        if kind not in _KINDS:
            return (f"The command runner in {self._where} sent a frame of unknown kind {kind!r}: it is not "
                    f"the runner this connection started (root in the sandbox may have replaced it).")
        if size > MAX_FRAME:
            return (f"The command runner in {self._where} announced a frame of {size} bytes, more than the "
                    f"{MAX_FRAME} it may send: it is not the runner this connection started (root in the "
                    f"sandbox may have replaced it); the frame was not read.")
        return None

    def _dispatch(self, kind, payload):
        """Hand a frame on; a message when it is not what the runner sends."""
        if kind == b"H":
            try:
                hello = json.loads(payload.decode("utf-8"))
            except ValueError:
                hello = None
            if not isinstance(hello, dict):
                return f"The command runner in {self._where} sent a hello that is not a JSON object."
            self._hello = hello
        elif kind == b"X" and not (0 < len(payload) <= _EXIT_DIGITS and payload.isdigit()):
            return f"The command runner in {self._where} sent an exit code that is not a number: {payload[:40]!r}."
        elif self._current is not None:
            self._current.frame(kind, payload)
        return None

    def _break(self, reason):
        """Stop taking frames (with the lock held): the runner is not to be trusted any more."""
        self._broken = self._broken or reason
        self._buffer = bytearray()
        self._partial_since = None
        if self._current is not None:
            self._current.lost(reason)
        self._lock.notify_all()

    def check_deadline(self):
        """Break the runner when a frame it began has not arrived within the frame deadline."""
        with self._lock:
            since = self._partial_since
            if since is not None and time.monotonic() - since > self._frame_deadline:
                self._break(f"The command runner in {self._where} began a frame and did not finish it within "
                            f"{self._frame_deadline} s: it is stuck or not the runner this connection started.")

    # -- state --------------------------------------------------------------------------

    def ready(self, timeout=0):
        """True once the runner said hello; False while it may still; raises once it cannot."""
        with self._lock:
            self._lock.wait_for(lambda: self._hello is not None or self._ended or self._broken, timeout)
            if self._hello is not None and not self._ended and not self._broken:
                if self._hello.get("version") != VERSION:
                    raise PixelsError(f"The command runner in {self._where} speaks version "
                                      f"{self._hello.get('version')}, not {VERSION}.")
                return True
            if self._ended or self._broken:
                raise PixelsError(self._broken or f"The command runner in {self._where} did not start "
                                  f"(no python3 there?).")
            return False

    @property
    def where(self):
        return self._where

    @property
    def usable(self):
        with self._lock:
            return self._hello is not None and not self._ended and not self._broken and self._current is None

    def send(self, kind, data=b""):
        view = memoryview(data)
        if len(view) <= STREAM_CHUNK:
            return self._session.write(_HEADER.pack(kind, len(view)) + bytes(view))
        for start in range(0, len(view), STREAM_CHUNK):
            piece = view[start:start + STREAM_CHUNK]
            if not self._session.write(_HEADER.pack(kind, len(piece)) + bytes(piece)):
                return False
        return True

    def run(self, argv, env=None, uid=None, gid=None, groups=None, cwd=None, stdout_sink=None):
        """Start a command; its RunnerCommand (an ExecSession). ``stdout_sink`` as for
        SandboxIO.exec_start."""
        if not self.usable:
            raise PixelsError(f"The command runner in {self._where} is not available.")
        command = RunnerCommand(self, stdout_sink)
        with self._lock:
            self._current = command
        request = {"argv": [str(arg) for arg in argv], "env": dict(env or {}), "uid": uid, "gid": gid,
                   "groups": None if groups is None else [int(g) for g in groups], "cwd": cwd}
        if not self.send(b"S", json.dumps(request).encode("utf-8")):
            with self._lock:
                self._current = None
            self.broken(f"The command runner in {self._where} stopped reading.")
            raise PixelsError(self._broken)
        return command

    def finished(self, command):
        with self._lock:
            if self._current is command:
                self._current = None

    def broken(self, reason):
        with self._lock:
            self._broken = self._broken or reason
            self._lock.notify_all()

    def close(self):
        """End the runner: end of its input makes it exit, and Incus then closes its streams
        (closing them first would wait for close handshakes that Incus does not answer)."""
        self.broken(f"The command runner in {self._where} was closed.")
        self._session.close_stdin()
        with self._lock:
            self._lock.wait_for(lambda: self._ended, 2)
        self._session.close()


class RunnerCommand(ExecSession):
    """One command of a CommandRunner, with the ExecSession interface of a direct exec."""

    def __init__(self, runner, stdout_sink=None):
        self._runner = runner
        self._sink = stdout_sink
        self._changed = threading.Condition()
        self._chunks = ([], [])
        self._sizes = [0, 0]
        self._rc = None
        self._lost = False
        self._reason = None
        self._stdin_open = True

    # called by the runner's reader thread
    def frame(self, kind, payload):
        if self._sink is not None and kind in (b"O", b"X"):
            self._sink(payload if kind == b"O" else None)  # all of stdout comes before the exit code
        with self._changed:
            if self._lost:
                return
            if kind == b"O" and self._sink is not None:
                pass  # streamed to the sink above (a fetched file), not kept
            elif kind in (b"O", b"R"):
                index = 0 if kind == b"O" else 1
                if self._sizes[index] + len(payload) > MAX_OUTPUT:
                    self._lost = True
                    self._reason = output_limit_message(("stdout", "stderr")[index], self._runner.where, MAX_OUTPUT)
                else:
                    self._sizes[index] += len(payload)
                    self._chunks[index].append(payload)
            elif kind == b"X":
                self._rc = int(payload)
            self._changed.notify_all()

    def lost(self, reason=None):
        if self._sink is not None:
            self._sink(None)
        with self._changed:
            self._lost = True
            self._reason = self._reason or reason
            self._changed.notify_all()

    def _ended(self):
        return self._rc is not None or self._lost

    def write(self, data):
        if not self._stdin_open:
            return False
        if not self._runner.send(b"I", data):
            self._stdin_open = False
        return self._stdin_open

    def close_stdin(self):
        if self._stdin_open:
            self._stdin_open = False
            self._runner.send(b"E")

    def output(self):
        with self._changed:
            return b"".join(self._chunks[0]), b"".join(self._chunks[1])

    def wait_output(self, timeout):
        with self._changed:
            seen = (len(self._chunks[0]), len(self._chunks[1]))
            return self._changed.wait_for(
                lambda: (len(self._chunks[0]), len(self._chunks[1])) != seen or self._ended(), timeout)

    def wait(self):
        self.close_stdin()
        while True:
            with self._changed:
                if self._changed.wait_for(self._ended, 1):
                    lost, reason = self._rc is None, self._reason
                    break
            self._runner.check_deadline()
        self._runner.finished(self)
        if reason:
            self._runner.send(b"K")  # a runner that still listens stops the command
            self._runner.broken(reason)
            raise PixelsError(reason)
        if lost:
            self._runner.broken("The command runner ended during a command.")
            raise PixelsError("The command runner in the sandbox ended while a command ran (did the command "
                              "stop it?): its result is unknown.")
        stdout, stderr = self.output()
        return ExecResult(self._rc, stdout, stderr)

    def close(self):
        """Done with the command; one that has not ended is killed, so the runner can go on."""
        with self._changed:
            ended = self._ended()
        if not ended:
            self._runner.send(b"K")
            self.close_stdin()
            with self._changed:
                ended = self._changed.wait_for(self._ended, 10)
            if not ended:
                self._runner.broken("A command in the runner could not be stopped.")
        self._runner.finished(self)
