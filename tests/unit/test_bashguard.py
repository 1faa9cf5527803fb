"""flowsh.bashguard: what the guard runs, skips and refuses at a library's top level, in a
real bash (through flowsh.bashlib's scripts)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from flowsh.bashlib import STATE_EVAL, library_state_script, source_script


def _bash(script: str, cwd: Path, env: dict[str, str] | None = None,
          ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "--noprofile", "--norc", "-c", script], cwd=cwd, text=True,
                          capture_output=True, env={"PATH": "/usr/bin:/bin", **(env or {})},
                          check=False, timeout=30)


def test_subshells_background_and_colon_redirections_never_run(tmp_path: Path) -> None:
    (tmp_path / "lib.sh").write_text(
        "( echo sub >> side )\necho bg >> side &\nX=1; ( echo same >> side )\n"
        ': > side2\n: "$(touch side3)"\n: "${D:=dflt}"\nY=$(echo y)\nf() { :; }\n')
    state = _bash(library_state_script(["lib.sh"]), tmp_path)
    assert state.returncode == 0, state.stderr
    text = state.stdout.partition("\0")[0]
    assert 'D="dflt"' in text and 'Y="y"' in text
    step = _bash(STATE_EVAL + "\n" + source_script(["lib.sh"], definitions_only=True)
                 + 'f; echo "$D$Y"', tmp_path, {"FLOWSH_LIBRARY_STATE": text})
    assert (step.returncode, step.stdout) == (0, "dflty\n"), step.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lib.sh"]


def test_a_loop_of_sources_is_read(tmp_path: Path) -> None:
    (tmp_path / "a1.sh").write_text("a1() { echo 1; }\n")
    (tmp_path / "a2.sh").write_text("a2() { echo 2; }\n")
    (tmp_path / "lib.sh").write_text('for f in ./a*.sh; do . "$f"; echo x >> side; done\n')
    res = _bash(source_script(["lib.sh"]) + "a1; a2", tmp_path)
    assert (res.returncode, res.stdout) == (0, "1\n2\n"), res.stderr
    assert not (tmp_path / "side").exists()


def test_sourcing_a_commands_output_is_refused(tmp_path: Path) -> None:
    (tmp_path / "lib.sh").write_text("f() { :; }\nsource <(touch side)\n")
    res = _bash(source_script(["lib.sh"]), tmp_path)
    assert res.returncode == 2
    assert "lib.sh:2: sourcing a command's output" in res.stderr
    assert not (tmp_path / "side").exists()
