"""flowsh.exportlib: the exported script's library handling, run in a real bash."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

from flowsh.exportlib import eval_script, guard, step_prelude


def bash(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["bash", "--noprofile", "--norc", "-c", script], cwd=cwd,
                          capture_output=True, env={"PATH": "/usr/bin:/bin", **env},
                          check=False, timeout=30)


def test_state_once_then_steps_with_precedence(tmp_path: Path) -> None:
    lib = tmp_path / "lib.sh"
    lib.write_text('STAMP=$(date +%s%N)\nDEST=/default\nshow() { echo "$STAMP $DEST"; }\nmain() { echo MAIN; }\nmain\n')
    refs = [shlex.quote(str(lib))]
    res = bash(eval_script(refs), tmp_path, {"FLOWSH_GUARD": guard()})
    assert res.returncode == 0, res.stderr
    state = res.stdout.partition(b"\0")[0].decode()
    assert "STAMP" in state and "DEST" in state and "MAIN" not in res.stdout.decode()
    step = step_prelude(refs) + "\nshow\n"
    env = {"FLOWSH_GUARD": guard(), "FLOWSH_LIBRARY_STATE": state}
    one = bash(step, tmp_path, env).stdout.decode()
    two = bash(step, tmp_path, env).stdout.decode()
    assert one == two and one.endswith(" /default\n")
    given = bash(step, tmp_path, {**env, "DEST": "/given", "FLOWSH_PRECEDENCE": "DEST"})
    assert given.stdout.decode() == one.replace("/default", "/given")


def test_prelude_leaves_no_helpers(tmp_path: Path) -> None:
    lib = tmp_path / "lib.sh"
    lib.write_text("f() { :; }\n")
    script = step_prelude([shlex.quote(str(lib))]) + "\ndeclare -F; compgen -v __flowsh_ || true\n"
    res = bash(script, tmp_path, {"FLOWSH_GUARD": guard()})
    assert res.stdout.decode() == "declare -f f\n", res.stderr


def test_guard_is_bash_that_defines_functions(tmp_path: Path) -> None:
    res = bash(guard() + "\ndeclare -F | wc -l\n", tmp_path, {})
    assert res.returncode == 0 and int(res.stdout) >= 2
