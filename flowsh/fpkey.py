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
import re
import secrets
from pathlib import Path

from flowsh.errors import UsageError
from flowsh.ownfile import NotOwn, make_once, read_own
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


def existing_key(home: Path) -> bytes | None:
    """The key in `home/fingerprint-key`, None when there is none: a command that only
    reads (`flowsh why`) makes no key (no success recorded here was hashed with one)."""
    path = home / KEY_NAME
    if path in _cache:
        return _cache[path]
    try:
        key = _read_own(path)
    except FileNotFoundError:
        return None
    _cache[path] = key
    return key


def _make(home: Path, path: Path) -> bytes:
    # The runner or an exported script making it at the same moment: either one's key
    # is the key.
    make_once(path, secrets.token_hex(32) + "\n")
    return _read_own(path)


def _read_own(path: Path) -> bytes:
    """The key in `path` if the file is a regular file of ours, mode 0600, holding 64 hex
    characters; else refused (another account could have planted it, or could read it)."""
    advice = "delete it (a new key is made; steps that see a secret run once)"
    try:
        text = read_own(path)
    except NotOwn as exc:
        if not exc.opened:
            raise UsageError(f"{path}: {exc}: {advice}") from None
        raise UsageError(f"{path}: the fingerprint key must be a file of yours with mode "
                         f"0600 ({exc}): {advice}") from None
    if not _HEX.match(text):
        raise UsageError(f"{path}: not a fingerprint key (64 hex characters): {advice}")
    return text.encode("ascii")
