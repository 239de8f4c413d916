# -*- coding: utf-8 -*-
# Copyright: (c) 2026, homelab.pixels contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""File transfers that keep the sandbox user's view, and fetched files on the controller.

The Incus file API reads and writes as root inside the instance and follows symbolic links
(incusd's sftp server opens the path with O_CREAT|O_TRUNC, then chowns and chmods the file it
opened when it did not exist a moment before). Writing that way into a directory that another
user owns lets that user point the write at any file of root's. So the connection plugin moves
files for any other account with TRANSFER_SOURCE, a small program run as that account through
the connection's command path (a direct exec or the command runner): the kernel then checks
every step as that user, and he reaches only what he could reach himself.

``put``: the data arrives on stdin. It goes into a new file in the target's directory (created
with O_EXCL|O_NOFOLLOW, so nothing planted there is opened), which is checked for its size,
given its mode, then renamed over the target: a symbolic link or hard link at the target is
replaced, never written through. ``get``: the file goes to stdout; only a regular file is
read (never a device, FIFO or socket). ``strict`` (for root writing on behalf of another
user, see the connection plugin) also refuses symbolic links in every component of the path.

Exit codes: 0 done, 2 missing, 3 permission denied, 4 not a regular file or directory,
5 incomplete data, 1 anything else; the reason is on stderr.
"""

from __future__ import annotations

import contextlib
import os

# Runs inside the sandbox with ``python3 -I -c``: Python 3.6 or later, standard library only.
TRANSFER_SOURCE = r'''
import errno, fcntl, os, stat, sys
CHUNK = 1 << 20
CODES = {errno.ENOENT: 2, errno.ENOTDIR: 2, errno.EACCES: 3, errno.EPERM: 3, errno.EROFS: 3, errno.ELOOP: 4}

class Refused(Exception):
    def __init__(self, code, message):
        Exception.__init__(self, message)
        self.code = code

def is_link(name, directory):
    try:
        os.readlink(name, dir_fd=directory)
        return True
    except OSError:
        return False

def parent(path, strict):
    """An fd of the directory of ``path`` and the last component's name."""
    directory, name = os.path.split(path)
    if not path.startswith("/") or name in ("", ".", ".."):
        raise Refused(1, "%s: not an absolute path to a file" % path)
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
    if not strict:
        return os.open(directory, flags), name
    fd = os.open("/", flags)
    for part in directory.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            os.close(fd)
            raise Refused(1, "%s: '..' in the path" % path)
        try:
            child = os.open(part, flags | os.O_NOFOLLOW, dir_fd=fd)
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR) or not is_link(part, fd):
                raise
            raise Refused(4, "%s: %s in its path is a symbolic link" % (path, part))
        finally:
            os.close(fd)
        fd = child
    return fd, name

def put(path, mode, size, strict):
    directory, name = parent(path, strict)
    try:
        for _attempt in range(100):
            temporary = ".pixels-put-" + os.urandom(8).hex()
            try:
                fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                             0o600, dir_fd=directory)
                break
            except FileExistsError:
                continue
        else:
            raise Refused(1, "%s: no free temporary name in its directory" % path)
        try:
            try:  # a larger pipe: fewer wake-ups between the writer and this program
                fcntl.fcntl(0, 1031, CHUNK)  # F_SETPIPE_SZ
            except OSError:
                pass
            done = 0
            while True:
                chunk = os.read(0, CHUNK)
                if not chunk:
                    break
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view):]
                done += len(chunk)
            if done != size:
                raise Refused(5, "%s: %d of %d bytes arrived" % (path, done, size))
            os.fchmod(fd, mode)
            os.close(fd)
            fd = None
            os.rename(temporary, name, src_dir_fd=directory, dst_dir_fd=directory)
        except BaseException:
            if fd is not None:
                os.close(fd)
            try:
                os.unlink(temporary, dir_fd=directory)
            except OSError:
                pass
            raise
    finally:
        os.close(directory)

def kind(mode):
    for test, name in ((stat.S_ISDIR, "directory"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device"), (stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket")):
        if test(mode):
            return name
    return "special file"

def get(path, strict):
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    if strict:
        directory, name = parent(path, True)
        try:
            fd = os.open(name, flags | os.O_NOFOLLOW, dir_fd=directory)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            raise Refused(4, "%s is a symbolic link" % path)
        finally:
            os.close(directory)
    else:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            raise Refused(4, "%s is a %s, not a regular file" % (path, kind(info.st_mode)))
        fd = os.open(path, flags)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise Refused(4, "%s is a %s, not a regular file" % (path, kind(info.st_mode)))
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        while True:
            chunk = os.read(fd, CHUNK)
            if not chunk:
                return
            view = memoryview(chunk)
            while view:
                view = view[os.write(1, view):]
    finally:
        os.close(fd)

try:
    if sys.argv[1] == "put":
        put(sys.argv[2], int(sys.argv[3], 8), int(sys.argv[4]), sys.argv[5] == "strict")
    else:
        get(sys.argv[2], sys.argv[3] == "strict")
except Refused as exc:
    sys.stderr.write("%s\n" % exc)
    sys.exit(exc.code)
except OSError as exc:
    where = exc.filename if exc.filename and exc.filename.startswith("/") else sys.argv[2]
    sys.stderr.write("%s: %s\n" % (where, exc.strerror))
    sys.exit(CODES.get(exc.errno, 1))
'''

# Exit codes of TRANSFER_SOURCE.
MISSING, DENIED, NOT_REGULAR, INCOMPLETE = 2, 3, 4, 5


@contextlib.contextmanager
def local_file(local_path):
    """A new file beside ``local_path`` to write into, put in its place when the block ends
    without an error, removed when it fails.

    It is created as any file of the controller's user is (mode 0666 less the umask, and the
    directory's default ACL): never with the sandbox's mode, so that a fetched file is not
    world-writable or setuid because the sandbox said so.
    """
    directory = os.path.dirname(os.path.abspath(local_path))
    for _attempt in range(100):
        temporary = os.path.join(directory, ".pixels-fetch-" + os.urandom(8).hex())
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
            break
        except FileExistsError:
            continue
    else:
        raise FileExistsError(f"no free temporary name in {directory}")
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
        os.replace(temporary, local_path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
