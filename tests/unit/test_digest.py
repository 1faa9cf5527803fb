"""flowsh.digest: hashlib's digests, without OpenSSL on a run's way to its first step."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import pytest

from flowsh import digest


@pytest.mark.parametrize("size", [0, 1, 63, 64, 65, 1000, 1 << 16])
def test_same_digests_as_hashlib(size: int) -> None:
    data = os.urandom(size)
    assert digest.sha256(data).hexdigest() == hashlib.sha256(data).hexdigest()
    assert digest.blake2b(data, digest_size=16).hexdigest() == \
        hashlib.blake2b(data, digest_size=16).hexdigest()
    h = digest.blake2b(digest_size=16)
    h.update(data[:size // 2])
    h.update(data[size // 2:])
    assert h.hexdigest() == hashlib.blake2b(data, digest_size=16).hexdigest()


def test_openssl_is_not_loaded() -> None:
    code = "import sys, flowsh.digest; print('_hashlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False"
