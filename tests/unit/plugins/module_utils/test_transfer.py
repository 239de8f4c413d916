"""The transfer helper's own logic, run here with this machine's Python (as the sandbox runs it)."""

import os
import subprocess
import sys

import pytest

from ansible_collections.homelab.pixels.plugins.module_utils.transfer import (
    INCOMPLETE,
    MISSING,
    NOT_REGULAR,
    TRANSFER_SOURCE,
    local_file,
)


def helper(*args, data=b""):
    return subprocess.run([sys.executable, "-I", "-c", TRANSFER_SOURCE, *map(str, args)], input=data,
                          capture_output=True, check=False, timeout=60)


@pytest.mark.parametrize("strict", ["follow", "strict"])
def test_put_replaces_a_link_at_the_target(tmp_path, strict):
    victim = tmp_path / "victim"
    victim.write_text("victim\n")
    target = tmp_path / "dir" / "target"
    target.parent.mkdir()
    target.symlink_to(victim)
    done = helper("put", target, "640", 5, strict, data=b"data\n")
    assert done.returncode == 0, done.stderr
    assert victim.read_text() == "victim\n"
    assert not target.is_symlink() and target.read_bytes() == b"data\n"
    assert oct(os.stat(target).st_mode & 0o7777) == oct(0o640)
    assert os.listdir(target.parent) == ["target"]


def test_put_with_missing_bytes_leaves_the_target_alone(tmp_path):
    target = tmp_path / "target"
    target.write_text("old\n")
    done = helper("put", target, "644", 100, "follow", data=b"short")
    assert done.returncode == INCOMPLETE and b"5 of 100 bytes arrived" in done.stderr
    assert target.read_text() == "old\n" and os.listdir(tmp_path) == ["target"]


def test_strict_refuses_a_link_in_the_path(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    done = helper("put", tmp_path / "link" / "file", "644", 1, "strict", data=b"x")
    assert done.returncode == NOT_REGULAR and b"link in its path is a symbolic link" in done.stderr
    assert os.listdir(real) == []
    # following it is fine for the user himself
    assert helper("put", tmp_path / "link" / "file", "644", 1, "follow", data=b"x").returncode == 0
    assert (real / "file").read_bytes() == b"x"
    (tmp_path / "filelink").symlink_to(real / "file")
    done = helper("get", tmp_path / "filelink", "strict")
    assert done.returncode == NOT_REGULAR and b"is a symbolic link" in done.stderr
    assert helper("get", tmp_path / "filelink", "follow").stdout == b"x"


def test_get_reads_regular_files_only(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    for path, kind in ((tmp_path / "fifo", b"FIFO"), ("/dev/null", b"character device"), (tmp_path, b"directory")):
        done = helper("get", path, "follow")
        assert done.returncode == NOT_REGULAR and b"is a " + kind + b", not a regular file" in done.stderr
        assert done.stdout == b""
    done = helper("get", tmp_path / "nothing", "follow")
    assert done.returncode == MISSING and b"No such file or directory" in done.stderr
    big = tmp_path / "big"
    big.write_bytes(os.urandom(3 << 20))
    assert helper("get", big, "follow").stdout == big.read_bytes()


def test_local_file_mode_and_failure(tmp_path):
    saved = os.umask(0o027)
    try:
        with local_file(str(tmp_path / "out")) as handle:
            handle.write(b"data")
    finally:
        os.umask(saved)
    assert oct(os.stat(tmp_path / "out").st_mode & 0o7777) == oct(0o640)
    with pytest.raises(RuntimeError):
        with local_file(str(tmp_path / "out")) as handle:
            handle.write(b"partial")
            raise RuntimeError("stream lost")
    assert (tmp_path / "out").read_bytes() == b"data" and os.listdir(tmp_path) == ["out"]
