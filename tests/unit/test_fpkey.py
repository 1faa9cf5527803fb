"""The key of secrets' fingerprints (flowsh/fpkey.py): a real file, real modes, and the
exported script's bash HMAC checked against Python's."""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
import subprocess
from pathlib import Path

import pytest

from flowsh import fpkey
from flowsh.errors import UsageError
from tests.conftest import run_cli


@pytest.fixture(autouse=True)
def _no_cache() -> None:
    fpkey._cache.clear()


def test_existing_key_makes_none_and_reads_the_one_made(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert fpkey.existing_key(home) is None and not home.exists()
    made = fpkey.fingerprint_key(home)
    fpkey._cache.clear()
    assert fpkey.existing_key(home) == made
    (home / fpkey.KEY_NAME).chmod(0o644)
    fpkey._cache.clear()
    with pytest.raises(UsageError, match="mode 0600"):
        fpkey.existing_key(home)


def test_made_once_private_and_reused(tmp_path: Path) -> None:
    key = fpkey.fingerprint_key(tmp_path)
    path = tmp_path / fpkey.KEY_NAME
    assert len(key) == 64 and stat.S_IMODE(path.stat().st_mode) == 0o600
    fpkey._cache.clear()
    assert fpkey.fingerprint_key(tmp_path) == key
    assert [p.name for p in tmp_path.iterdir()] == [fpkey.KEY_NAME]  # no temp file left


@pytest.mark.parametrize("mode, text", [(0o644, "a" * 64), (0o600, "not a key")])
def test_a_readable_or_bad_key_is_refused(tmp_path: Path, mode: int, text: str) -> None:
    path = tmp_path / fpkey.KEY_NAME
    path.write_text(text + "\n")
    os.chmod(path, mode)
    with pytest.raises(UsageError, match="fingerprint key"):
        fpkey.fingerprint_key(tmp_path)


def test_script_hmac_is_rfc2104(tmp_path: Path) -> None:
    """The script's HMAC in bash and sha256sum alone is HMAC-SHA256 (of the text and a
    line break, as the script hashes values), under the same key file."""
    flow = tmp_path / "f.yaml"
    flow.write_text("name: f\nsteps:\n  - {name: s, sources: in, run: 'true'}\n")
    out = tmp_path / "f.sh"
    assert run_cli("export", "--bash", str(flow), "-o", str(out)).returncode == 0
    script = out.read_text().rsplit('flowsh_main "$@"', 1)[0]
    home = tmp_path / "home"
    home.mkdir()
    text = "API_PIN=47\\x00'11 é"
    code = (script + "\nFLOWSH_HOME_DIR=$1\nflowsh_utd_key\n"
            'flowsh_utd_hmac "$2"\nprintf %s "$REPLY"\n')
    # A file, not `bash -c`: the script is longer than one argument may be (128 KiB).
    (tmp_path / "hmac.sh").write_text(code)
    got = subprocess.run(["bash", str(tmp_path / "hmac.sh"), str(home), text],
                         capture_output=True, text=True, check=True).stdout
    key = (home / fpkey.KEY_NAME).read_text().strip().encode()
    assert got == hmac.new(key, (text + "\n").encode(), hashlib.sha256).hexdigest()
    assert got == fpkey.keyed(key, text + "\n")
