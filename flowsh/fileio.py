"""Writing a file so that readers and crashes see the old content or the new, never half."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def temp_file(directory: Path, prefix: str, suffix: str = ".tmp") -> tuple[int, str]:
    """A new file of this process's own in `directory` (0600, opened for writing): the fd
    and path that tempfile.mkstemp would give. Not tempfile: with shutil and random it is
    ~2 ms of a first run (the parse cache's first entry is written this way)."""
    while True:
        name = os.path.join(directory, f"{prefix}{os.urandom(6).hex()}{suffix}")
        try:
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            continue  # another writer drew the same 48 bits
        return fd, name


def atomic_write(path: Path, data: str | bytes, mode: int = 0o600) -> None:
    """Replace `path` with `data` (text is written as UTF-8): temp file in the same
    directory, fsync, rename, fsync dir.

    The temp name starts with a dot and ends in `.tmp`, so globbing readers (node_exporter's
    textfile collector, `state_*.json`) never pick up a half-written file. Raises OSError;
    on error the temp file is removed and `path` is untouched.
    """
    fd, tmp = temp_file(path.parent, f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
            fh.flush()
            os.fchmod(fh.fileno(), mode)
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    try:
        dfd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):  # some filesystems refuse fsync on a directory
            os.fsync(dfd)
    finally:
        os.close(dfd)


def tail_lines(path: str | None, lines: int, max_bytes: int) -> tuple[list[str], bool]:
    """The last `lines` lines of a (log) file, reading at most `max_bytes` from its end,
    and whether anything was left out. A missing or unreadable file has no lines."""
    if not path:
        return [], False
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            data = fh.read()
    except OSError:
        return [], False
    got = data.decode("utf-8", errors="replace").splitlines()
    return got[-lines:], size > max_bytes or len(got) > lines
