"""Writing a file so that readers and crashes see the old content or the new, never half."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def atomic_write(path: Path, data: str | bytes, mode: int = 0o600) -> None:
    """Replace `path` with `data` (text is written as UTF-8): temp file in the same
    directory, fsync, rename, fsync dir.

    The temp name starts with a dot and ends in `.tmp`, so globbing readers (node_exporter's
    textfile collector, `state_*.json`) never pick up a half-written file. Raises OSError;
    on error the temp file is removed and `path` is untouched.
    """
    import tempfile  # here: with shutil and random, ~1 ms of every start that writes nothing

    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
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
