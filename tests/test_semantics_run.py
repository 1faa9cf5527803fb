"""`flowsh run` against the shared rules (issue 10): one validation path, `if:` errors,
failed steps' outputs, params. The CLI runs as a subprocess; exit codes and output asserted."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

import pytest

Cli = Callable[..., CompletedProcess[str]]


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip())
    return path


# -- one validation path ----------------------------------------------------------------


@pytest.mark.parametrize("channel", [
    "{type: slak, url: 'http://127.0.0.1:9'}",  # a typo'd type
    "{type: webhook}",  # a webhook without its url
])
def test_run_refuses_an_invalid_notify_channel_before_anything_runs(
    tmp_path: Path, cli: Cli, channel: str,
) -> None:
    wf = write(tmp_path / "flow.yaml", f"""
        notify:
          channels:
            ops: {channel}
        steps:
          - name: a
            run: touch ran
        """)
    validated = cli("validate", str(wf))
    run = cli("run", str(wf))
    assert validated.returncode == 2
    assert run.returncode == 2, run.stderr
    assert run.stderr.strip() == validated.stderr.strip().replace("flowsh: error: ", "") \
        or validated.stderr.strip() in run.stderr
    assert f"{wf}:3:" in run.stderr
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "ran").exists()
    assert "no runs" in cli("history").stdout.lower() or "flow" not in cli("history").stdout


def test_run_refuses_a_step_calling_a_function_the_library_lacks(tmp_path: Path,
                                                                  cli: Cli) -> None:
    write(tmp_path / "lib.sh", "hello() { echo hi; }\n")
    wf = write(tmp_path / "flow.yaml", """
        source: lib.sh
        steps:
          - name: a
            run: touch ran
          - name: b
            run: helo
        """)
    run = cli("run", str(wf))
    assert run.returncode == 2
    assert "'helo'" in run.stderr and f"{wf}:6:" in run.stderr
    assert not (tmp_path / "ran").exists()


# -- if: ----------------------------------------------------------------------------------


def test_if_exit_1_skips_and_any_other_status_fails_the_step(tmp_path: Path, cli: Cli,
                                                            home: Path) -> None:
    wf = write(tmp_path / "flow.yaml", """
        steps:
          - name: skipped
            if: 'exit 1'
            run: touch skipped.ran
            needs: []
          - name: runs
            if: 'exit 0'
            run: touch runs.ran
            needs: []
          - name: broken
            if: '[ $COUNT -gt 0 ]'
            run: touch broken.ran
            needs: []
            continue_on_failure: true
          - name: missing
            if: no_such_command_xyz
            run: touch missing.ran
            needs: []
        """)
    res = cli("run", str(wf), "--json", env={"COUNT": ""})
    assert res.returncode == 1, res.stderr
    assert (tmp_path / "runs.ran").exists()
    for name in ("skipped", "broken", "missing"):
        assert not (tmp_path / f"{name}.ran").exists()
    status = cli("status", "--json")
    import json

    steps = json.loads(status.stdout)["steps"]
    assert steps["skipped"]["status"] == "skipped"
    assert steps["skipped"]["message"] == "condition false"
    assert steps["runs"]["status"] == "succeeded"
    assert steps["broken"]["status"] == "failed"
    assert "exit 2" in steps["broken"]["message"]
    assert "unary operator expected" in steps["broken"]["message"]
    assert steps["missing"]["status"] == "failed"
    assert "exit 127" in steps["missing"]["message"]
    log = Path(steps["broken"]["log_path"]).read_text()
    assert "unary operator expected" in log
    assert "command not found" in Path(steps["missing"]["log_path"]).read_text()


def test_if_killed_by_a_signal_fails_the_step(tmp_path: Path, cli: Cli) -> None:
    wf = write(tmp_path / "flow.yaml", """
        steps:
          - name: a
            if: 'kill -TERM $$'
            run: touch ran
        """)
    res = cli("run", str(wf))
    assert res.returncode == 1
    assert "signal SIGTERM" in res.stderr + res.stdout
    assert not (tmp_path / "ran").exists()


# -- a failed step's outputs ----------------------------------------------------------------


def test_a_failed_steps_outputs_are_discarded_also_on_resume(tmp_path: Path,
                                                              cli: Cli) -> None:
    wf = write(tmp_path / "flow.yaml", """
        steps:
          - name: a
            run: echo "GOOD=yes" >> "$FLOWSH_OUTPUT"
          - name: b
            continue_on_failure: true
            run: |
              echo "BAD=leaked" >> "$FLOWSH_OUTPUT"
              exit 3
          - name: c
            run: |
              echo "${GOOD-unset} ${BAD-unset}" >> seen
              test -e go
        """)
    first = cli("run", str(wf))
    assert first.returncode == 1
    # A failed step adds none of its own outputs, but what it received from steps that
    # succeeded (a's GOOD) passes on, as through a skipped step.
    assert (tmp_path / "seen").read_text() == "yes unset\n"
    (tmp_path / "go").touch()
    again = cli("run", str(wf), "--resume")
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "seen").read_text() == "yes unset\nyes unset\n"
    status = json.loads(cli("status", "--json").stdout)
    assert status["steps"]["b"]["outputs"] == {}


# -- params -------------------------------------------------------------------------------


PARAMS = """
    params:
      day:
      region: eu
      other: null
    steps:
      - name: a
        run: printf '%s|%s|%s\\n' "$day" "$region" "$other" > out
    """


@pytest.mark.parametrize("command", ["run", "dry"])
def test_an_undeclared_param_is_refused_with_did_you_mean(tmp_path: Path, cli: Cli,
                                                           command: str) -> None:
    wf = write(tmp_path / "flow.yaml", PARAMS)
    extra = ["--dry-run"] if command == "dry" else []
    res = cli("run", str(wf), *extra, "dya=2026-02-02", "day=1", "other=2")
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1
    assert "unknown parameter 'dya'" in res.stderr and "did you mean 'day'?" in res.stderr
    assert not (tmp_path / "out").exists()


def test_a_param_without_default_is_required(tmp_path: Path, cli: Cli) -> None:
    wf = write(tmp_path / "flow.yaml", PARAMS)
    res = cli("run", str(wf), "other=2")
    assert res.returncode == 2
    assert res.stderr == (f"flowsh: error: parameter day needs a value (declared without a "
                          f"default in {wf}): pass day=VALUE\n")
    assert not (tmp_path / "out").exists()
    ok = cli("run", str(wf), "day=2026-02-02", "other=")
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "out").read_text() == "2026-02-02|eu|\n"
    assert cli("validate", str(wf)).returncode == 0


def test_resume_keeps_the_recorded_required_params_and_refuses_unknown_ones(
    tmp_path: Path, cli: Cli,
) -> None:
    wf = write(tmp_path / "flow.yaml", """
        params:
          day:
        steps:
          - name: a
            run: echo "$day" >> out; test -e go
        """)
    assert cli("run", str(wf), "day=d1").returncode == 1
    import json

    run_id = json.loads(cli("status", "--json").stdout)["run_id"]
    bad = cli("resume", run_id, "dy=2")
    assert bad.returncode == 2 and "did you mean 'day'?" in bad.stderr
    (tmp_path / "go").touch()
    res = cli("resume", run_id)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "out").read_text() == "d1\nd1\n"


@pytest.mark.parametrize(("params", "message"), [
    ("  day: [1]\n", ":2:8: params 'day': the value must be text"),
    ("  ok: 1\n  bad-name:\n", ":3:3: key 'params': param name 'bad-name' is not a shell"),
])
def test_bad_params_are_one_line_without_pydantic_words(tmp_path: Path, cli: Cli,
                                                        params: str, message: str) -> None:
    wf = tmp_path / "flow.yaml"
    wf.write_text(f"params:\n{params}steps:\n  - name: a\n    run: 'true'\n")
    for args in (["validate", str(wf)], ["run", str(wf)]):
        res = cli(*args)
        assert res.returncode == 2
        assert res.stderr.count("\n") == 1 and message in res.stderr, res.stderr
        assert "Input should" not in res.stderr and "pydantic" not in res.stderr


def test_two_resumes_of_one_run_never_run_it_twice(write_flow, home):
    """One run has one runner: a second (overlap: allow lets it past the workflow lock, or
    two resumes race before either is recorded running) gets exit 75; a resume that read
    the run before another runner finished it starts a new run instead of re-running
    what succeeded (rt11 #22, #23)."""
    import fcntl
    import os

    import pytest

    from flowsh.engine import RunOptions, run_workflow
    from flowsh.errors import LockHeldError
    from flowsh.loader import load_workflow
    from flowsh.store import open_backend

    flow = write_flow("""
        overlap: allow
        steps:
          - {name: a, run: "echo a >> runs"}
          - {name: b, run: "[ -e ok ] && echo b >> runs"}
    """)
    wf = load_workflow(flow)
    failed = run_workflow(wf, RunOptions())
    assert failed.exit_code == 1
    (flow.parent / "ok").touch()
    backend = open_backend(None)
    stale = backend.load_run(failed.run_id)
    fd = os.open(home / "runs" / failed.run_id / "runner.lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another process is running this run now
    try:
        with pytest.raises(LockHeldError, match="is being run by another flowsh process"):
            run_workflow(wf, RunOptions(resume=backend.load_run(failed.run_id)))
    finally:
        os.close(fd)
    done = run_workflow(wf, RunOptions(resume=backend.load_run(failed.run_id)))
    assert done.run_id == failed.run_id and done.exit_code == 0
    again = run_workflow(wf, RunOptions(resume=stale))  # read before `done` finished it
    assert again.run_id != failed.run_id and again.exit_code == 0
    # a once and b once per run: the stale resume did not run the finished run's steps
    assert (flow.parent / "runs").read_text() == "a\nb\na\nb\n"
    backend.close()


def test_an_if_test_never_touches_the_log_of_a_step_named_like_it(write_flow, home):
    """Step `a`'s test and step `a.if` each keep their own log (red team rt10b #1: the
    test wrote `a.if.log`, then deleted it)."""
    from flowsh.engine import RunOptions, run_workflow
    from flowsh.loader import load_workflow

    flow = write_flow("""
        steps:
          - {name: a.if, run: "echo from-a.if"}
          - {name: a, if: "echo test-says >&2; exit 3", run: "true"}
    """)
    run = run_workflow(load_workflow(flow), RunOptions())
    assert run.steps["a.if"].status == "succeeded" and run.steps["a"].status == "failed"
    log = home / "runs" / run.run_id / "a.if.log"
    assert log.read_text() == "from-a.if\n"
    assert "test-says" in (run.steps["a"].message or "")
    assert "from-a.if" not in (run.steps["a"].message or "")


def test_a_new_run_stops_the_steps_of_a_run_already_marked_crashed(write_flow, tmp_path):
    """rt11b #4: `--resume` marks a dead runner's run crashed, then (a cron tick whose file
    lost a step) starts afresh: the crashed run's still-running step must be stopped."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import alive, run_cli, wait_dead

    flow = write_flow(f"""
        steps:
          - {{name: s, run: "[ -e {tmp_path}/first ] && exit 0; touch {tmp_path}/first; echo $$ > {tmp_path}/pid; sleep 60"}}
    """)
    runner = subprocess.Popen([sys.executable, "-m", "flowsh", "run", str(flow), "-q"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pid_file = tmp_path / "pid"
    end = time.monotonic() + 60
    while not (pid_file.exists() and pid_file.read_text().strip()):
        assert time.monotonic() < end and runner.poll() is None
        time.sleep(0.05)
    orphan = int(pid_file.read_text())
    os.kill(runner.pid, signal.SIGKILL)
    runner.wait()
    assert run_cli("history").returncode == 0  # marks the run crashed
    assert alive(orphan)
    res = run_cli("run", str(flow))
    assert res.returncode == 0, res.stderr
    assert "stopped it before starting a new run" in res.stderr
    assert wait_dead(orphan)
