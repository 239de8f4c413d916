"""The command runner's protocol, with the runner started locally (it is plain Python)."""

import hashlib
import os
import struct
import subprocess
import sys
import threading
import time

import pytest

from ansible_collections.homelab.pixels.plugins.module_utils.errors import PixelsError
from ansible_collections.homelab.pixels.plugins.module_utils import runner as runner_module
from ansible_collections.homelab.pixels.plugins.module_utils.runner import RUNNER_SOURCE, CommandRunner


class LocalSession:
    """What CommandRunner needs of an exec session, for a local process."""

    def __init__(self, sink, argv=None):
        self.process = subprocess.Popen(argv or [sys.executable, "-I", "-c", RUNNER_SOURCE],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.reader = threading.Thread(target=self._read, args=(sink,), daemon=True)
        self.reader.start()

    def _read(self, sink):
        while True:
            chunk = os.read(self.process.stdout.fileno(), 65536)
            if not chunk:
                sink(None)
                return
            sink(chunk)

    def write(self, data):
        try:
            self.process.stdin.write(data)
            self.process.stdin.flush()
            return True
        except (OSError, ValueError):
            return False

    def close_stdin(self):
        try:
            self.process.stdin.close()
        except OSError:
            pass

    def close(self):
        self.close_stdin()
        self.process.wait(10)


@pytest.fixture
def runner():
    started = CommandRunner(LocalSession, "the test")
    assert started.ready(10)
    yield started
    started.close()


def run(runner, argv, stdin=b"", **kwargs):
    with runner.run(argv, **kwargs) as command:
        if stdin:
            command.write(stdin)
        return command.wait()


def test_streams_and_exit_code(runner):
    assert run(runner, ["sh", "-c", "cat; echo err >&2; exit 3"], b"in\n") == (3, b"in\n", b"err\n")
    assert run(runner, ["true"]) == (0, b"", b"")


def test_large_streams(runner):
    data = os.urandom((3 << 20) + 7)
    result = run(runner, ["sha256sum"], data)
    assert result.stdout.split()[0].decode() == hashlib.sha256(data).hexdigest()
    assert len(run(runner, ["sh", "-c", "head -c 5000000 /dev/zero"]).stdout) == 5000000


def test_missing_and_signalled_commands(runner):
    result = run(runner, ["/nonexistent/command"])
    assert result.rc == 127 and b"No such file or directory" in result.stderr
    assert run(runner, ["sh", "-c", "kill -9 $$"]).rc == 137


def test_environment_and_directory(runner, tmp_path):
    result = run(runner, ["sh", "-c", 'echo "$FOO"; pwd'], env={"FOO": "bar"}, cwd=str(tmp_path))
    assert result.stdout.decode().split() == ["bar", str(tmp_path)]
    result = run(runner, ["sh", "-c", "pwd"], cwd=str(tmp_path / "missing"))
    assert result.rc == 0  # a missing directory is not an error, as for Incus' exec


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_user_and_groups(runner):
    result = run(runner, ["sh", "-c", "id -u; id -g; id -G"], uid=65534, gid=65534, groups=[4, 27], cwd="/nonexistent")
    uid, gid, groups = result.stdout.decode().splitlines()
    assert (uid, gid, set(groups.split())) == ("65534", "65534", {"65534", "4", "27"})
    assert run(runner, ["pwd"], uid=65534, gid=65534, groups=[]).stdout == b"/\n"
    assert run(runner, ["id", "-G"], uid=65534, gid=65534, groups=[]).stdout.split() == [b"65534"]


def test_stdin_closed_early_and_output_as_it_comes(runner):
    with runner.run(["sh", "-c", "printf 'prompt: '; read answer; echo got $answer"]) as command:
        while b"prompt: " not in command.output()[0]:
            assert command.wait_output(5)
        command.write(b"yes\n")
        assert command.wait() == (0, b"prompt: got yes\n", b"")
    assert run(runner, ["true"], b"x" * (1 << 20)).rc == 0  # the command never reads its stdin


def test_a_command_left_running_is_killed_and_the_runner_goes_on(runner):
    started = time.monotonic()
    with runner.run(["sh", "-c", "read never; sleep 60"]):
        pass  # closed without wait(): killed
    assert time.monotonic() - started < 10
    assert run(runner, ["echo", "next"]).stdout == b"next\n"


def test_one_command_at_a_time(runner):
    with runner.run(["sleep", "0.1"]) as command:
        with pytest.raises(PixelsError, match="not available"):
            runner.run(["true"])
        assert command.wait().rc == 0
    assert runner.usable


def test_runner_that_never_starts():
    broken = CommandRunner(lambda sink: LocalSession(sink, ["sh", "-c", "exit 127"]), "nowhere")
    with pytest.raises(PixelsError, match="did not start"):
        broken.ready(10)
    broken.close()


def test_runner_dying_during_a_command(runner):
    with runner.run(["sh", "-c", "kill -9 $PPID; sleep 5"]) as command:
        with pytest.raises(PixelsError, match="ended while a command ran"):
            command.wait()
    assert not runner.usable


# -- a runner that root in the sandbox replaced: it says hello, takes the command, then misbehaves --

HOSTILE = r'''
import struct, sys
HEADER = struct.Struct(">cI")
OUT, IN = sys.stdout.buffer, sys.stdin.buffer
OUT.write(HEADER.pack(b"H", len(HELLO)) + HELLO); OUT.flush()
kind, size = HEADER.unpack(IN.read(HEADER.size)); IN.read(size)
OUT.write(ANSWER); OUT.flush()
IN.read()  # until the controller closes its end
'''


def hostile(answer, hello=b'{"version": 1, "pid": 1}', frame_deadline=30):
    source = f"HELLO = {hello!r}\nANSWER = {answer!r}\n" + HOSTILE
    started = CommandRunner(lambda sink: LocalSession(sink, [sys.executable, "-I", "-c", source]), "px-evil",
                            frame_deadline=frame_deadline)
    return started


def fails_fast(runner, match, within=5):
    started = time.monotonic()
    try:
        assert runner.ready(10)
        with runner.run(["true"]) as command:
            with pytest.raises(PixelsError, match=match):
                command.wait()
        assert time.monotonic() - started < within
        assert not runner.usable
        assert len(runner._buffer) == 0  # pylint: disable=protected-access
    finally:
        runner.close()


def test_a_4_gib_frame_fails_at_once_without_buffering():
    header = struct.pack(">cI", b"O", 0xFFFFFFFF)
    fails_fast(hostile(header + b"x" * 100000), r"px-evil announced a frame of 4294967295 bytes, more than the 1048576")


def test_a_frame_that_never_ends_fails_at_the_deadline():
    header = struct.pack(">cI", b"O", 1000)
    runner = hostile(header + b"x" * 10, frame_deadline=1)
    fails_fast(runner, r"began a frame and did not finish it within 1 s")


@pytest.mark.parametrize("answer, match", [
    (struct.pack(">cI", b"Z", 2) + b"hi", "unknown kind b'Z'"),
    (struct.pack(">cI", b"X", 9) + b"1; rm -rf", "exit code that is not a number"),
])
def test_frames_the_runner_never_sends(answer, match):
    fails_fast(hostile(answer), match)


def test_a_hello_that_is_not_json():
    runner = hostile(b"", hello=b"\x1b]0;owned\x07")
    try:
        with pytest.raises(PixelsError, match="hello that is not a JSON object"):
            runner.ready(10)
    finally:
        runner.close()


def test_output_beyond_the_limit_stops_the_command(monkeypatch, runner):
    monkeypatch.setattr(runner_module, "MAX_OUTPUT", 100000)
    with runner.run(["sh", "-c", "while :; do head -c 65536 /dev/zero; done"]) as command:
        with pytest.raises(PixelsError, match="the test printed more than 100000 bytes on stdout"):
            command.wait()
    assert not runner.usable
