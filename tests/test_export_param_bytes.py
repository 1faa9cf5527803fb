"""Params reach steps byte for byte in the exported script whatever the locale: in a UTF-8
locale bash's pattern expansions reorder bytes that are not UTF-8 (scripts/torture.py's
fuzz found 7e df 5c a8 arriving as 7e 5c df a8), so the script parses arguments as bytes."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.exportkit import export_script

VALUES = [b"~\xdf\\\xa8", b"\xc3\x28=\\x", b"\xff\xfe$(x)\\", "été".encode()]


@pytest.mark.parametrize("locale", ["C.UTF-8", "C"])
def test_param_bytes_survive_the_exported_script(tmp_path: Path, locale: str) -> None:
    wf = tmp_path / "flow.yaml"
    wf.write_text("params: {P: x}\nsteps:\n  - {name: a, run: 'printf %s \"$P\" > got'}\n")
    script = export_script(wf)
    for value in VALUES:
        res = subprocess.run(
            [b"bash", os.fsencode(script), b"P=" + value], capture_output=True, check=False,
            timeout=60, env={**os.environ, "LC_ALL": locale}, cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        assert (tmp_path / "got").read_bytes() == value
