"""flowsh.steps: a step's argv (run through real bash), environment, retry delays, plan."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from flowsh.loader import load_workflow
from flowsh.steps import (
    base_environment,
    build_argv,
    describe_plan,
    library_files,
    retry_delay,
    shell_name,
)


def test_shell_name() -> None:
    assert shell_name(["bash"]) == "bash"
    assert shell_name(["/usr/bin/env", "-S", "A=1", "bash", "-e"]) == "bash"
    assert shell_name(["/bin/zsh", "-f"]) == "zsh"
    assert shell_name(["env"]) == "env"
    assert shell_name([]) == ""


def _run(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False,
                          env={"PATH": os.environ["PATH"], **(env or {})})


def test_run_step_values_only_through_env(write_flow: Callable[..., Path], tmp_path: Path) -> None:
    wf = load_workflow(write_flow("name: w\nsteps:\n  - name: s\n    run: 'printf %s \"$P\"'\n"))
    argv = build_argv(wf, wf.step("s"))
    assert argv[0] == "bash" and argv[-1] == "flowsh:s"
    evil = "$(touch pwned); `id`"
    res = _run(argv, tmp_path, {"P": evil})
    assert res.stdout == evil and not (tmp_path / "pwned").exists()


def test_strict_stops_at_the_first_failure_and_pipefail(write_flow: Callable[..., Path],
                                                        tmp_path: Path) -> None:
    text = "steps:\n  - name: s\n    run: |\n      false | true\n      echo after\n"
    wf = load_workflow(write_flow("name: w\n" + text))
    assert wf.strict  # the default
    res = _run(build_argv(wf, wf.step("s")), tmp_path)
    assert res.returncode == 1 and res.stdout == ""
    lax = load_workflow(write_flow("name: w\nstrict: false\n" + text, name="lax.yaml"))
    assert _run(build_argv(lax, lax.step("s")), tmp_path).stdout == "after\n"


def test_sourced_library_defaults_do_not_undo_params(write_flow: Callable[..., Path],
                                                     tmp_path: Path) -> None:
    (tmp_path / "lib.sh").write_text('day=default\ngreet() { echo "hi $day"; }\nmain() { echo MAIN; }\nmain "$@"\n')
    wf = load_workflow(write_flow("name: w\nsource: [lib.sh]\nsteps:\n  - name: s\n    run: greet\n"))
    assert library_files(wf, wf.step("s")) == [str(tmp_path / "lib.sh")]
    res = _run(build_argv(wf, wf.step("s"), keep=["day"]), tmp_path, {"day": "2026-12-05"})
    assert res.stdout == "hi 2026-12-05\n", res.stderr  # and main did not run


def test_script_step(write_flow: Callable[..., Path], tmp_path: Path) -> None:
    (tmp_path / "s.sh").write_text('echo "args: $*"\n')
    wf = load_workflow(write_flow("name: w\nsteps:\n  - name: s\n    script: s.sh\n    args: [a b, c]\n"))
    argv = build_argv(wf, wf.step("s"))
    assert argv[-3:] == [str(tmp_path / "s.sh"), "a b", "c"]
    assert _run(argv, tmp_path).stdout == "args: a b c\n"
    (tmp_path / "s.sh").chmod(0o755)
    assert build_argv(wf, wf.step("s"))[0] == str(tmp_path / "s.sh")


def test_non_posix_shell(write_flow: Callable[..., Path], tmp_path: Path) -> None:
    wf = load_workflow(write_flow("name: w\nshell: python3\nsteps:\n  - name: s\n    run: print(6*7)\n"))
    argv = build_argv(wf, wf.step("s"))
    assert argv == ["python3", "-c", "print(6*7)"]
    assert _run(argv, tmp_path).stdout == "42\n"


def test_retry_delay_backoff_cap_and_jitter(write_flow: Callable[..., Path]) -> None:
    wf = load_workflow(write_flow(
        "name: w\nsteps:\n  - name: s\n    run: x\n    retries: 5\n    retry_delay: 2s\n"
        "    backoff: 3\n    max_delay: 10s\n    jitter: 0\n  - name: j\n    run: x\n    retries: 1\n"
        "    retry_delay: 10s\n    jitter: 0.5\n"))
    s = wf.step("s")
    assert [retry_delay(s, n) for n in (1, 2, 3)] == [2.0, 6.0, 10.0]
    ds = [retry_delay(wf.step("j"), 1) for _ in range(200)]
    assert all(5.0 <= d <= 15.0 for d in ds) and len(set(ds)) > 1


def test_base_environment_precedence(write_flow: Callable[..., Path], tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAYER", "os")
    (tmp_path / ".env").write_text("LAYER=file\nFROM_FILE=1\n")
    wf = load_workflow(write_flow("name: w\nenv_file: .env\nenv:\n  LAYER: env\nsteps:\n  - {name: s, run: x}\n"))
    env = base_environment(wf, {})
    assert env["LAYER"] == "env" and env["FROM_FILE"] == "1"
    assert base_environment(wf, {"LAYER": "param"})["LAYER"] == "param"


def test_describe_plan(write_flow: Callable[..., Path]) -> None:
    wf = load_workflow(write_flow(
        "name: w\nsteps:\n  - name: a\n    run: |\n      echo one\n      echo two\n"
        "    retries: 2\n  - name: b\n    run: x\n    needs: []\n    timeout: 90s\n"
        "  - name: c\n    run: y\n    needs: [a, b]\n    always: true\n"))
    assert list(describe_plan(wf)) == [
        "stage 1: a, b", "  a: echo one  [retries=2]", "  b: x  [timeout=90s]",
        "stage 2: c", "  c: y  [always]"]


def test_describe_plan_names_the_pool_and_its_size(write_flow: Callable[..., Path]) -> None:
    wf = load_workflow(write_flow("name: w\npools: {db: 2}\nsteps:\n"
                                  "  - {name: a, run: x, pool: db}\n"))
    assert list(describe_plan(wf)) == ["stage 1: a", "  a: x  [pool=db (size 2)]"]


def test_describe_plan_names_a_foreach_and_its_bound(write_flow: Callable[..., Path]) -> None:
    wf = load_workflow(write_flow("""
        steps:
          - {name: a, foreach: [eu, us], max_parallel: 1, run: 'sync "$ITEM"'}
          - {name: b, foreach: {file: regions.txt}, run: 'true'}
        """))
    lines = list(describe_plan(wf))
    assert lines[1] == '  a: sync "$ITEM"  [foreach=eu, us (max_parallel=1)]'
    assert lines[3] == "  b: true  [foreach=file regions.txt]"
