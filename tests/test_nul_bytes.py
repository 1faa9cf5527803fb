"""A NUL byte ends a C string: no argument or environment variable can hold one, and bash
drops it silently. flowsh refuses it wherever a user can put one — the workflow file
(FILE:LINE, key), the env_file (FILE:LINE), a step's outputs (the step fails) — in
flowsh run and the exported script alike; before, flowsh run died with a traceback
("embedded null byte") and the exported script passed on an altered value."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

Cli = Callable[..., subprocess.CompletedProcess[str]]


def _script(cli: Cli, wf: Path) -> Path:
    out = wf.with_suffix(".sh")
    res = cli("export", "--bash", str(wf), "-o", str(out))
    assert res.returncode == 0, res.stderr
    return out


def _bash(script: Path, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=120,
                          check=False, env={"PATH": "/usr/bin:/bin", "HOME": str(home),
                                            "FLOWSH_HOME": str(home)})


@pytest.mark.parametrize("where, key", [
    ('env: {A: "x\\0y"}\nsteps: [{name: a, run: "true"}]\n', "env.A"),
    ('params: {A: "x\\0y"}\nsteps: [{name: a, run: "true"}]\n', "params.A"),
    ('steps: [{name: a, env: {A: "x\\0y"}, run: "true"}]\n', "steps[0].env.A"),
    ('steps: [{name: a, run: "echo \\0"}]\n', "steps[0].run"),
    ('steps:\n  - name: a\n    script: s.sh\n    args: ["x\\0y"]\n', "steps[0].args[0]"),
])
def test_workflow_file_nul_is_refused_with_file_line_and_key(
    tmp_path: Path, cli: Cli, where: str, key: str,
) -> None:
    (tmp_path / "s.sh").write_text("#!/bin/bash\n")
    (tmp_path / "s.sh").chmod(0o755)
    wf = tmp_path / "flow.yaml"
    wf.write_text(where)
    for cmd in ("validate", "run", "export"):
        args = [cmd, str(wf)] if cmd != "export" else ["export", "--bash", str(wf)]
        res = cli(*args)
        assert res.returncode == 2, (cmd, res.stderr)
        line = res.stderr.strip()
        assert "Traceback" not in res.stderr and len(line.splitlines()) == 1, res.stderr
        assert f"{wf}:" in line, line
        assert f"key '{key}': a NUL byte" in line, line


def test_env_file_nul_is_refused_in_both_runtimes(tmp_path: Path, cli: Cli, home: Path) -> None:
    env = tmp_path / "e.env"
    env.write_bytes(b"A=1\n")
    wf = tmp_path / "flow.yaml"
    wf.write_text("env_file: e.env\nsteps: [{name: a, run: 'echo \"$A\" > out'}]\n")
    script = _script(cli, wf)  # exported while the file is clean; it gains a NUL later
    env.write_bytes(b"A=1\nB=x\0y\n")
    res = cli("run", str(wf))
    assert res.returncode == 2 and f"{env}:2: a NUL byte" in res.stderr, res.stderr
    out = _bash(script, home)
    assert out.returncode == 2 and "e.env:2: a NUL byte" in out.stderr, out.stderr
    assert not (tmp_path / "out").exists()


def test_output_nul_fails_the_step_in_both_runtimes(tmp_path: Path, cli: Cli, home: Path) -> None:
    wf = tmp_path / "flow.yaml"
    wf.write_text(
        "steps:\n"
        "  - {name: a, run: \"printf 'A=1\\\\nB<<E\\\\nx\\\\0y\\\\nE\\\\n' >> \\\"$FLOWSH_OUTPUT\\\"\"}\n"
        "  - {name: b, needs: [a], run: 'echo \"$B\" > seen'}\n")
    res = cli("run", str(wf))
    assert res.returncode == 1, res.stderr
    assert "$FLOWSH_OUTPUT line 3: a NUL byte" in res.stdout + res.stderr
    out = _bash(_script(cli, wf), home)
    assert out.returncode == 1, out.stderr
    assert "$FLOWSH_OUTPUT line 3: a NUL byte" in out.stdout + out.stderr
    assert not (tmp_path / "seen").exists()
