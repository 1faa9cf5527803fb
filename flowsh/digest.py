"""Hash constructors that leave OpenSSL alone.

`import hashlib` loads libcrypto and reads openssl.cnf: ~2 ms of every start, for the few
short texts a run hashes on its way to its first step (the parse cache's key, the
definition hash). CPython's own implementations, the ones hashlib falls back to without
OpenSSL, give the same digests. Files (`sources:` in uptodate.py) still go through
hashlib: OpenSSL's sha256 is several times faster on large data.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hashlib import blake2b, sha256
else:
    try:
        from _blake2 import blake2b
    except ImportError:  # another interpreter, or a build without it
        from hashlib import blake2b
    try:
        from _sha2 import sha256  # CPython 3.12+
    except ImportError:
        try:
            from _sha256 import sha256  # CPython 3.10, 3.11
        except ImportError:
            from hashlib import sha256

__all__ = ["blake2b", "sha256"]
