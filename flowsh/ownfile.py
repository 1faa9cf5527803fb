"""A small private file of the user's own under `$FLOWSH_HOME` (the UI token, the
fingerprint key): made once, mode 0600 from the first byte, and read back only while it
is still a regular file of this user with mode 0600 (another account could have planted
it, or could read it)."""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path


class NotOwn(Exception):
    """The file is there but could not be opened (`opened` false: `str()` is the system's
    reason) or is not one to trust (`str()` says why: `it is 644, owner uid 1001`)."""

    def __init__(self, why: str, *, opened: bool) -> None:
        super().__init__(why)
        self.opened = opened


def make_once(path: Path, text: str) -> bool:
    """Write `text` to `path` unless it exists; whether this call wrote it.

    Written whole under a private name, then linked into place: a process making it at
    the same moment reads either no file or a complete one, never a half-written one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask says
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:  # the other one won
        return False
    finally:
        os.unlink(tmp)
    return True


def read_own(path: Path, limit: int = 4096) -> str:
    """The text in `path`, stripped. FileNotFoundError when there is none; NotOwn when
    it is not a regular file of ours with mode 0600, or cannot be opened."""
    try:
        # O_NONBLOCK: a FIFO planted there would block the open until someone writes to
        # it; so it opens at once, and the fstat below refuses it.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise NotOwn(exc.strerror or str(exc), opened=False) from None
    try:
        st = os.fstat(fd)
        mode = stat.S_IMODE(st.st_mode)
        regular = stat.S_ISREG(st.st_mode)
        if not regular or st.st_uid != os.getuid() or mode != 0o600:
            raise NotOwn("it is " + ("not a regular file" if not regular else oct(mode)[2:])
                         + ("" if st.st_uid == os.getuid() else f", owner uid {st.st_uid}"),
                         opened=True)
        return os.read(fd, limit).decode("utf-8", errors="replace").strip()
    finally:
        os.close(fd)
