"""Read a file an SMS daemon's hook names (a gammu inbox file, an smstools incoming file) safely.

The hook runs with the SMS daemon's rights over a spool directory other users may be able to
write to, so the name is not trusted: the file must be a regular file reached without following
a symbolic link in its last component (``O_NOFOLLOW``: a link planted in the spool could point
at ``/etc/passwd``, which would then travel upstream as an SMS text), and at most ``limit + 1``
bytes are read (a huge file, ``/dev/zero`` or a FIFO cannot exhaust memory or block the hook).
Links among the directories above the file are followed: the spool directory itself may be one.
"""

from __future__ import annotations

import errno
import os
import stat

from gateway.errors import DecodeError

__all__ = ["read_spool_file"]

_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


def read_spool_file(name: str, limit: int) -> bytes:
    """The bytes of ``name``; ``DecodeError`` naming the file when it is a symbolic link, not a
    regular file, or larger than ``limit``; ``OSError`` when it cannot be opened or read."""
    try:
        fd = os.open(name, _FLAGS)  # O_NONBLOCK: opening a FIFO returns at once instead of hanging
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise DecodeError(
                f"{name}: a symbolic link; only regular files in the spool directory are read"
            ) from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise DecodeError(
                f"{name}: not a regular file ({_kind(info.st_mode)}); not an SMS file"
            )
        if info.st_size > limit:
            raise DecodeError(f"{name}: {info.st_size} bytes; an SMS file is at most {limit}")
        chunks: list[bytes] = []
        size = 0
        while size <= limit:  # the file may grow after fstat: stop one byte past the limit
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    if size > limit:
        raise DecodeError(f"{name}: more than {limit} bytes; an SMS file is at most {limit}")
    return b"".join(chunks)


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a plain file"
