"""Bounds on what a command in a sandbox can make the controller keep: IncusExec with fake streams."""

import contextlib
import threading

import pytest
from websockets.exceptions import ConnectionClosedOK
from websockets.frames import Close

from ansible_collections.homelab.pixels.plugins.module_utils import incus_io
from ansible_collections.homelab.pixels.plugins.module_utils.errors import PixelsError
from ansible_collections.homelab.pixels.plugins.module_utils.incus_io import IncusExec


class Endless:
    """A websocket whose peer prints without end, until it is closed."""

    def __init__(self, message=b"y" * 4096):
        self.message = message
        self.closed = threading.Event()
        self.sent = []

    def recv(self):
        if self.closed.is_set():
            raise ConnectionClosedOK(Close(1000, ""), Close(1000, ""), True)
        return self.message

    def send(self, data):
        self.sent.append(data)

    def close(self):
        self.closed.set()


class Quiet(Endless):
    """A stream that stays silent until it is closed."""

    def recv(self):
        self.closed.wait(30)
        return super().recv()


class Backend:
    def exec_return(self, instance, operation):
        raise AssertionError("a command whose output overflowed is not waited for")


def session(stdout, stderr):
    stdin = Endless()
    streams = contextlib.ExitStack()
    for connection in (stdin, stdout, stderr):
        streams.callback(connection.close)
    return IncusExec(Backend(), "px-evil", "op", [stdin, stdout, stderr], streams)


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
def test_endless_output_stops_the_command(monkeypatch, stream):
    monkeypatch.setattr(incus_io, "MAX_OUTPUT", 100000)
    loud, quiet = Endless(), Quiet()
    command = session(*((loud, quiet) if stream == "stdout" else (quiet, loud)))
    with pytest.raises(PixelsError, match=f"px-evil printed more than 100000 bytes on {stream}"):
        command.wait()
    assert loud.closed.is_set() and quiet.closed.is_set()  # the streams are closed: the command ends
    assert sum(map(len, command.output())) <= 100000
