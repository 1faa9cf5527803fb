"""The README's two set-up commands work as written, in a fresh clone, on the system python3.

What runs: a `git clone` of this repository with the working tree's tracked and new files
laid over it (so the test checks what the next commit will hold), then each README command
through `bash -c` with the system `python3` and a minimal environment (PATH, HOME, LANG —
nothing of the caller's, no venv, no FLOWSH_*). pip still reads the machine's own
configuration files (/etc/pip.conf), as it would for a new user on this machine.

The first command runs whole: venv, install, the ETL example. The second is the command CI
runs on a fresh clone (`.ci/run`, which must hold it verbatim): running it again here would
install the test dependencies and type-check the tree a second time for nothing, so this
test checks that the two are the same text. pip's download cache is the machine's own
(PIP_CACHE_DIR): a new user's first install downloads, which proves nothing more here.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT


def _readme_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Set up on a fresh machine", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)\n```", section, re.S)


def _fresh_clone(dest: Path) -> Path:
    subprocess.run(["git", "clone", "-q", str(ROOT), str(dest)], check=True)
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, check=True, capture_output=True,
    ).stdout.split(b"\0")
    for raw in filter(None, listed):
        rel = raw.decode()
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


@pytest.mark.timeout(900)
def test_readme_setup_commands_work_in_a_fresh_clone_with_system_python(
    tmp_path: Path,
) -> None:
    system_python = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin")
    assert system_python, "no python3 on the system PATH"
    install_and_example, tests = _readme_commands()
    clone = _fresh_clone(tmp_path / "flowsh")
    assert not (clone / ".venv").exists()
    home = tmp_path / "home"
    home.mkdir()
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8",
           "PIP_CACHE_DIR": os.environ.get("PIP_CACHE_DIR",
                                           str(Path.home() / ".cache" / "pip"))}

    first = subprocess.run(["bash", "-c", install_and_example], cwd=clone, env=env,
                           capture_output=True, text=True, timeout=600, check=False)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert re.search(r"run \d{8}T\d{6}-[0-9a-f]{8} succeeded", first.stdout + first.stderr)
    assert (clone / ".venv" / "bin" / "flowsh").exists()

    assert tests.endswith("scripts/test")
    ci = (ROOT / ".ci" / "run").read_text()
    assert f"\n{tests}\n" in ci, "the README's test command and .ci/run's differ"
