"""Hash constructors that leave OpenSSL alone.

`import hashlib` loads libcrypto and reads openssl.cnf: ~2 ms of every start, for the few
short texts a run hashes on its way to its first step (the parse cache's key, the
definition hash). CPython's own implementations, the ones hashlib falls back to without
OpenSSL, give the same digests. Files (`sources:` in uptodate.py) still go through
hashlib: OpenSSL's sha256 is several times faster on large data.

A CPython built without one of its own hash modules (``--with-builtin-hashlib-hashes``
leaves some out) still runs: sha256 then comes from OpenSSL, the same digests; without
_blake2 there is no BLAKE2 at all (hashlib's blake2b is _blake2's), and `blake2b` is a
stand-in with other digests. Only the parse cache uses it, for keys and checksums that
stay on this machine: an entry written by another interpreter is a miss, never a wrong hit.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hashlib import blake2b, sha256
else:
    try:
        from _sha2 import sha256  # CPython 3.12+
    except ImportError:
        try:
            from _sha256 import sha256  # CPython 3.10, 3.11
        except ImportError:
            try:  # OpenSSL's, without hashlib: it logs an error per missing builtin
                from _hashlib import openssl_sha256 as sha256
            except ImportError:
                from hashlib import sha256

    class _Sha256Cut:
        """blake2b's interface over sha256, cut to `digest_size` bytes (at most 32)."""

        def __init__(self, data: bytes = b"", *, digest_size: int = 64) -> None:
            if not 0 < digest_size <= 32:
                raise ValueError(f"digest_size {digest_size}: the stand-in has 1 to 32")
            self.digest_size = digest_size
            self._h = sha256(data)

        def update(self, data: bytes) -> None:
            self._h.update(data)

        def digest(self) -> bytes:
            return self._h.digest()[:self.digest_size]

        def hexdigest(self) -> str:
            return self.digest().hex()

    try:
        from _blake2 import blake2b
    except ImportError:
        if sys.implementation.name == "cpython":  # hashlib has none either: no import
            blake2b = _Sha256Cut
        else:  # another interpreter may have its own
            try:
                from hashlib import blake2b
            except ImportError:
                blake2b = _Sha256Cut

__all__ = ["blake2b", "sha256"]
