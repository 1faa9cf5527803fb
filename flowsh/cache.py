"""Derived data kept between runs under ``$FLOWSH_HOME/cache``: never the truth, only a
shortcut to it.

Each entry is one file whose name carries a hash of everything its content depends on, so
an entry is either right or absent: nothing is ever served stale. Written atomically (temp
file, rename), so concurrent writers each leave a whole file and readers never see half of
one. Anything unreadable, undecodable or of another format is a miss, never an error, and
a cache that cannot be written (read-only home, full disk) is simply not kept.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from flowsh.digest import blake2b

# First line of every entry: format version and a checksum of the rest, so an entry torn
# by a crash (written without fsync: it is only a cache) or by anything else is a miss.
FORMAT = b"flowsh-cache 1 "


def key(*parts: str | bytes) -> str:
    h = blake2b(digest_size=16)
    for part in parts:
        # surrogatepass: any str (a path decoded with surrogateescape, a lone surrogate)
        # has one encoding, and two different ones never share it.
        data = part.encode("utf-8", "surrogatepass") if isinstance(part, str) else part
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def environment() -> str:
    """What the installed distributions may change: the interpreter, flowsh's version and
    every directory on ``sys.path`` with its mtime (installing, upgrading or removing a
    distribution adds or removes its ``.dist-info``, which changes the directory's mtime)."""
    import sys

    from flowsh import __version__

    parts = [sys.version, sys.prefix, __version__]
    for entry in sys.path:
        try:
            parts.append(f"{entry}\0{os.stat(entry or '.').st_mtime_ns}")
        except OSError:
            parts.append(f"{entry}\0-")
    return "\0".join(parts)


def directory() -> Path:
    from flowsh.state import flowsh_home

    return flowsh_home() / "cache"


def load(kind: str, digest: str) -> bytes | None:
    """The entry's payload, or None (absent, unreadable, or not one of ours)."""
    if os.environ.get("FLOWSH_NO_CACHE"):
        return None
    try:
        with open(directory() / f"{kind}-{digest}", "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    head, _, payload = data.partition(b"\n")
    if head != FORMAT + _checksum(payload):
        return None
    return payload


def _checksum(payload: bytes) -> bytes:
    return blake2b(payload, digest_size=16).hexdigest().encode()


KEEP = 64  # entries of one kind kept; the oldest written go first


def store(kind: str, digest: str, payload: bytes) -> None:
    """Keep an entry; best effort (a failure only means the next run misses). Beyond
    `KEEP` entries of its kind, the least recently written are removed: every edit of a
    workflow file makes a new entry, and nothing else would ever remove the old ones."""
    if os.environ.get("FLOWSH_NO_CACHE"):
        return
    from flowsh.errors import StateError
    from flowsh.fileio import temp_file
    from flowsh.state import ensure_private_dir

    d = directory()
    try:
        # Not mkdir(mode=0o700, parents=True): that mode is the leaf's only, and the cache
        # may be what first makes $FLOWSH_HOME (0777 under a umask of 000).
        ensure_private_dir(d)
        fd, tmp = temp_file(d, f".{kind}-")
    except (OSError, StateError):
        return
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(FORMAT + _checksum(payload) + b"\n" + payload)
        os.replace(tmp, d / f"{kind}-{digest}")
    except BaseException as exc:  # Ctrl-C too: a temp file left here stays for good
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            return
        raise
    _trim(d, kind)


# A temp file this old is a killed writer's (SIGKILL, a crash, SIGTERM before a run's
# handlers): a write under way takes milliseconds.
STALE_TEMP_NS = 3600 * 10**9


def _trim(d: Path, kind: str) -> None:
    import time

    entries = []
    stale = time.time_ns() - STALE_TEMP_NS
    with contextlib.suppress(OSError), os.scandir(d) as it:
        for e in it:
            temp = e.name.startswith(f".{kind}-") and e.name.endswith(".tmp")
            if e.name.startswith(f"{kind}-") or temp:
                with contextlib.suppress(OSError):  # removed meanwhile by another writer
                    mtime = e.stat(follow_symlinks=False).st_mtime_ns
                    if not temp:
                        entries.append((mtime, e.path))
                    elif mtime < stale:
                        os.unlink(e.path)
    entries.sort()
    for _, path in entries[: max(0, len(entries) - KEEP)]:
        with contextlib.suppress(OSError):
            os.unlink(path)
