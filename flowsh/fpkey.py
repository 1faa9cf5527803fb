"""The key a secret's fingerprint is hashed with (docs/semantics.md UPTODATE-8).

A step's fingerprint records each value it sees, hashed, in the store (`flowsh status
--json`, the web API). An unkeyed sha256 of a PIN or a short token is the value itself to
anyone who tries the 10,000 PINs. So a secret's entry is an HMAC-SHA256 under a key kept
outside the store: `$FLOWSH_HOME/fingerprint-key`, 64 hex characters (used as written, a
64-byte key), made once 0600 with O_EXCL (never readable by others, not for an instant),
reused only while it is still the user's own file, mode 0600. The exported script reads
the same file at run time (templates/bash/uptodate.sh.j2, flowsh_utd_key): its text holds
no key.

Another FLOWSH_HOME (another host of a shared store) has another key: a step that sees a
secret runs once there before it is up to date again. Deleting the key does the same.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import stat
from pathlib import Path

from flowsh.errors import UsageError
from flowsh.state import ensure_private_dir

KEY_NAME = "fingerprint-key"
_HEX = re.compile(r"[0-9a-f]{64}\Z")
_cache: dict[Path, bytes] = {}


def keyed(key: bytes, text: str) -> str:
    """HMAC-SHA256 of `text` under `key`, hex."""
    return hmac.new(key, text.encode("utf-8", "surrogateescape"), hashlib.sha256).hexdigest()


def fingerprint_key(home: Path) -> bytes:
    """The key in `home/fingerprint-key`, made now if there is none."""
    path = home / KEY_NAME
    if path in _cache:
        return _cache[path]
    ensure_private_dir(home)
    try:
        key = _read_own(path)
    except FileNotFoundError:
        key = _make(home, path)
    _cache[path] = key
    return key


def _make(home: Path, path: Path) -> bytes:
    # Written whole under a private name, then linked into place: a runner (or an exported
    # script) making it at the same moment reads either no file or a complete one.
    tmp = home / f".{KEY_NAME}.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask says
        os.write(fd, (secrets.token_hex(32) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:  # the other one won: use its key
        pass
    finally:
        os.unlink(tmp)
    return _read_own(path)


def _read_own(path: Path) -> bytes:
    """The key in `path` if the file is a regular file of ours, mode 0600, holding 64 hex
    characters; else refused (another account could have planted it, or could read it)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise UsageError(f"{path}: {exc.strerror or exc}: delete it (a new key is made; "
                         "steps that see a secret run once)") from None
    try:
        st = os.fstat(fd)
        mode = stat.S_IMODE(st.st_mode)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or mode != 0o600:
            raise UsageError(f"{path}: the fingerprint key must be a file of yours with mode "
                             "0600: delete it (a new key is made; steps that see a secret "
                             "run once)")
        text = os.read(fd, 4096).decode("ascii", errors="replace").strip()
    finally:
        os.close(fd)
    if not _HEX.match(text):
        raise UsageError(f"{path}: not a fingerprint key (64 hex characters): delete it (a "
                         "new key is made; steps that see a secret run once)")
    return text.encode("ascii")
