"""Sourced libraries (shared rule 1): definitions only in every step; top-level
assignments evaluated once per run, recorded with it, reused on resume."""

from __future__ import annotations

import json
import stat
import textwrap
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

Cli = Callable[..., CompletedProcess[str]]

LIB = r"""
#!/bin/bash
set -euo pipefail
STAMP=$(date +%s%N)
DEST=/default
declare -A MAP=([k]="a b")
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$HERE/inner.sh"
main() { echo ran >> main.calls; }
show() { printf '%s %s %s %s\n' "$STAMP" "$DEST" "${MAP[k]}" "$(inner)" >> seen; }
main "$@"
"""


def setup(tmp_path: Path, flow: str) -> Path:
    (tmp_path / "lib.sh").write_text(textwrap.dedent(LIB).lstrip())
    (tmp_path / "inner.sh").write_text("inner() { echo inner; }\n")
    wf = tmp_path / "flow.yaml"
    wf.write_text(textwrap.dedent(flow).lstrip())
    return wf


def test_assignments_are_evaluated_once_per_run_and_kept_on_resume(
    tmp_path: Path, cli: Cli, home: Path,
) -> None:
    wf = setup(tmp_path, """
        source: lib.sh
        steps:
          - name: one
            run: show
          - name: two
            run: show; sleep 0.01
          - name: three
            run: show; test -e ok
        """)
    assert cli("run", str(wf)).returncode == 1
    (tmp_path / "ok").touch()
    res = cli("run", str(wf), "--resume")
    assert res.returncode == 0, res.stderr
    lines = (tmp_path / "seen").read_text().splitlines()
    assert len(lines) == 4  # one, two, three (failed), three again after the resume
    assert len(set(lines)) == 1, lines
    stamp, dest, *rest = lines[0].split(" ")
    assert stamp.isdigit() and dest == "/default" and rest == ["a", "b", "inner"]
    assert not (tmp_path / "main.calls").exists()  # the trailing `main "$@"` never ran
    run_id = json.loads(cli("status", "--json").stdout)["run_id"]
    recorded = home / "runs" / run_id / "library-state.json"
    assert stat.S_IMODE(recorded.stat().st_mode) == 0o600
    assert stamp in recorded.read_text()


def test_a_library_running_main_at_the_bottom_runs_it_zero_times(tmp_path: Path,
                                                                  cli: Cli) -> None:
    wf = setup(tmp_path, """
        source: lib.sh
        steps:
          - name: a
            run: inner > out
          - name: b
            run: main
        """)
    res = cli("run", str(wf))
    assert res.returncode == 0, res.stderr
    # Only step b's own call: neither the run's evaluation nor any step's sourcing ran it.
    assert (tmp_path / "main.calls").read_text() == "ran\n"


def test_env_params_outputs_and_step_env_win_over_the_library(tmp_path: Path,
                                                              cli: Cli) -> None:
    wf = setup(tmp_path, """
        source: lib.sh
        params:
          DEST: /param-default
        env:
          MAP_NOTE: env
        steps:
          - name: lib
            run: show
          - name: out
            run: echo 'STAMP=from-output' >> "$FLOWSH_OUTPUT"; show
          - name: stepenv
            env: {STAMP: from-step-env}
            run: show
        """)
    res = cli("run", str(wf), "DEST=/param")
    assert res.returncode == 0, res.stderr
    lib, out, stepenv = (tmp_path / "seen").read_text().splitlines()
    assert lib.split(" ")[1] == "/param"
    assert out.split(" ")[:2] == [lib.split(" ")[0], "/param"]
    assert stepenv.split(" ")[:2] == ["from-step-env", "/param"]
    assert (tmp_path / "seen").read_text().count("from-output") == 0
    # A later step sees the upstream output over the library's STAMP.
    wf.write_text(wf.read_text() + "  - name: after\n    run: show\n")
    assert cli("run", str(wf)).returncode == 0
    assert (tmp_path / "seen").read_text().splitlines()[-1].startswith("from-output ")
    assert (tmp_path / "seen").read_text().splitlines()[-1].split(" ")[1] == "/param-default"


def test_workflow_env_beats_the_library_default(tmp_path: Path, cli: Cli) -> None:
    wf = setup(tmp_path, """
        source: lib.sh
        env: {DEST: /from-env}
        steps:
          - name: a
            run: show
        """)
    assert cli("run", str(wf)).returncode == 0
    assert (tmp_path / "seen").read_text().split(" ")[1] == "/from-env"


def test_a_failing_library_evaluation_is_exit_2_with_nothing_recorded(tmp_path: Path,
                                                                      cli: Cli) -> None:
    # Fails with the run's env (BOOM set); validate evaluates with it too (FILE-2).
    (tmp_path / "lib.sh").write_text('f() { :; }\nX=${BOOM:+${NOPE:?boom}}\n')
    wf = tmp_path / "flow.yaml"
    wf.write_text("source: lib.sh\nenv: {BOOM: '1'}\nsteps:\n  - name: a\n    run: f; touch ran\n")
    assert cli("validate", str(wf)).returncode == 2
    res = cli("run", str(wf))
    assert res.returncode == 2, res.stderr
    assert "evaluating the top-level assignments" in res.stderr
    assert not (tmp_path / "ran").exists()
    assert "no runs" in cli("history").stderr


def test_the_evaluation_sees_the_run_id_as_the_first_step_would(tmp_path: Path,
                                                                 cli: Cli) -> None:
    (tmp_path / "lib.sh").write_text('TAG="run-${FLOWSH_RUN_ID:-none}"\nf() { echo "$TAG"; }\n')
    wf = tmp_path / "flow.yaml"
    wf.write_text("source: lib.sh\nsteps:\n  - name: a\n    run: f > out\n")
    assert cli("run", str(wf)).returncode == 0
    run_id = json.loads(cli("status", "--json").stdout)["run_id"]
    assert (tmp_path / "out").read_text() == f"run-{run_id}\n"


def test_bashlib_pieces_used_alone_as_an_exported_script_would(tmp_path: Path) -> None:
    """The interface the exported script calls: library_state_script once, then per step
    STATE_EVAL + source_script(definitions_only=True)."""
    import subprocess

    from flowsh.bashlib import STATE_EVAL, library_state_script, source_script

    lib = tmp_path / "lib.sh"
    lib.write_text('N=$((RANDOM * 32768 + RANDOM))\nexport E=1\nf() { echo "$N $E"; }\n'
                   'echo top-level >&2\nmain "$@"\n')
    once = subprocess.run(["bash", "-c", library_state_script([str(lib)])], cwd=tmp_path,
                          capture_output=True, check=True)
    state = once.stdout.partition(b"\0")[0].decode()
    assert "declare -- N=" in state and 'declare -x E="1"' in state
    assert b"top-level" not in once.stderr
    step = STATE_EVAL + "\n" + source_script([str(lib)], definitions_only=True) + "f\n"
    outs = {subprocess.run(["bash", "-c", step], env={"FLOWSH_LIBRARY_STATE": state,
                                                      "PATH": "/usr/bin:/bin"},
                           capture_output=True, text=True, check=True).stdout
            for _ in range(3)}
    assert len(outs) == 1 and outs.pop().endswith(" 1\n")


def test_library_variables_too_large_for_the_environment_are_refused_in_both_runtimes(
    tmp_path: Path, cli: Cli, home: Path,
) -> None:
    """Linux caps one environment string at 128 KiB: a larger library state would make every
    step die with "Argument list too long". Both runtimes refuse it before any step, exit 2;
    reading the 140 KB assignment takes seconds, not the minutes char-by-char parsing took."""
    (tmp_path / "lib.sh").write_text("BIG=" + "x" * 140_000 + "\nf() { echo ${#BIG} > n; }\n")
    wf = tmp_path / "flow.yaml"
    wf.write_text("source: lib.sh\nsteps: [{name: a, run: f}]\n")
    res = cli("run", str(wf))
    assert res.returncode == 2, res.stderr
    assert "take 140018 bytes" in res.stderr and "at most 120000" in res.stderr
    script = tmp_path / "flow.sh"
    exp = cli("export", "--bash", str(wf), "-o", str(script))
    assert exp.returncode == 0, exp.stderr
    import subprocess
    out = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=120,
                         check=False, env={"PATH": "/usr/bin:/bin", "HOME": str(home),
                                           "FLOWSH_HOME": str(home)})
    assert out.returncode == 2, out.stderr
    assert "at most 120000" in out.stderr
    assert not (tmp_path / "n").exists()
