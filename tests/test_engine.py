"""The run loop with real processes: order, concurrency, failures, retries, timeouts, outputs."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from flowsh.engine import RunOptions, run_workflow
from flowsh.loader import load_workflow
from flowsh.state import RunRecord
from flowsh.store import open_backend
from tests.conftest import wait_dead


def run(path: Path, **opts: object) -> RunRecord:
    return run_workflow(load_workflow(path), RunOptions(**opts))  # type: ignore[arg-type]


def statuses(rec: RunRecord) -> dict[str, str]:
    return {n: s.status for n, s in rec.steps.items()}


def spans(trace: Path) -> dict[str, tuple[float, float]]:
    """Steps append 'name start|end <time>' lines; return name -> (start, end)."""
    out: dict[str, list[float]] = {}
    for line in trace.read_text().splitlines():
        name, what, t = line.split()
        out.setdefault(name, [0.0, 0.0])[0 if what == "start" else 1] = float(t)
    return {k: (v[0], v[1]) for k, v in out.items()}


TRACE = 'echo "$FLOWSH_STEP start $(date +%s.%N)" >> trace; sleep {s}; ' \
        'echo "$FLOWSH_STEP end $(date +%s.%N)" >> trace'


def test_diamond_runs_in_dependency_order_and_in_parallel(
    write_flow: Callable[..., Path], tmp_path: Path
) -> None:
    t = TRACE.format(s="0.4")
    path = write_flow(f"""
        concurrency: 4
        steps:
          - {{name: a, run: '{t}'}}
          - {{name: b, run: '{t}', needs: [a]}}
          - {{name: c, run: '{t}', needs: [a]}}
          - {{name: d, run: '{t}', needs: [b, c]}}
    """)
    rec = run(path)
    assert rec.status == "succeeded" and rec.exit_code == 0
    sp = spans(tmp_path / "trace")
    assert sp["a"][1] <= sp["b"][0] and sp["a"][1] <= sp["c"][0]
    assert max(sp["b"][1], sp["c"][1]) <= sp["d"][0]
    assert sp["b"][0] < sp["c"][1] and sp["c"][0] < sp["b"][1]  # b and c overlapped

    (tmp_path / "trace").unlink()
    run(path, concurrency=1)
    sp = spans(tmp_path / "trace")
    first, second = sorted([sp["b"], sp["c"]])
    assert first[1] <= second[0]  # -j 1: never two at once


def test_failure_stops_new_steps_skips_unreachable_runs_always(
    write_flow: Callable[..., Path], tmp_path: Path
) -> None:
    path = write_flow("""
        concurrency: 2
        steps:
          - {name: slow, run: 'sleep 0.6; touch slow.done', needs: []}
          - {name: bad, run: 'exit 3', needs: []}
          - {name: after_bad, run: 'touch after_bad', needs: [bad]}
          - {name: after_slow, run: 'touch after_slow', needs: [slow]}
          - {name: cleanup, run: 'touch cleanup', always: true, needs: [after_bad, after_slow]}
    """)
    rec = run(path)
    assert rec.status == "failed" and rec.exit_code == 1
    st = statuses(rec)
    assert st["bad"] == "failed" and rec.steps["bad"].exit_code == 3
    assert st["slow"] == "succeeded" and (tmp_path / "slow.done").exists()  # running step finished
    assert st["after_bad"] == "skipped" and st["after_slow"] == "skipped"
    assert not (tmp_path / "after_bad").exists() and not (tmp_path / "after_slow").exists()
    assert st["cleanup"] == "succeeded" and (tmp_path / "cleanup").exists()


def test_continue_on_failure_and_false_condition(
    write_flow: Callable[..., Path], tmp_path: Path
) -> None:
    path = write_flow("""
        params: {mode: full}
        steps:
          - {name: optional, run: 'exit 7', continue_on_failure: true}
          - {name: partial_only, run: 'touch partial', if: '[ "$mode" = partial ]'}
          - {name: last, run: 'touch last'}
    """)
    rec = run(path)
    assert statuses(rec) == {"optional": "failed", "partial_only": "skipped", "last": "succeeded"}
    assert rec.exit_code == 0 and (tmp_path / "last").exists()
    assert not (tmp_path / "partial").exists()
    rec = run(path, params={"mode": "partial"})
    assert statuses(rec)["partial_only"] == "succeeded"


def test_retries_with_backoff_then_success(write_flow: Callable[..., Path], tmp_path: Path) -> None:
    path = write_flow("""
        steps:
          - name: flaky
            run: 'n=$(cat count 2>/dev/null || echo 0); echo $((n+1)) > count; echo "try $((n+1))"; [ "$n" -ge 2 ]'
            retries: 3
            retry_delay: 0.1s
            backoff: 2
            jitter: 0
    """)
    t0 = time.monotonic()
    rec = run(path)
    elapsed = time.monotonic() - t0
    step = rec.steps["flaky"]
    assert step.status == "succeeded" and step.attempts == 3
    assert (tmp_path / "count").read_text().strip() == "3"
    assert elapsed >= 0.3  # 0.1 + 0.2 of backoff really waited
    log = Path(step.log_path or "").read_text()
    assert "try 1" in log and "--- flowsh: attempt 3 ---" in log and "try 3" in log


def test_retries_exhausted(write_flow: Callable[..., Path], tmp_path: Path) -> None:
    path = write_flow("""
        steps:
          - {name: never, run: 'echo x >> tries; exit 4', retries: 2, retry_delay: 0}
    """)
    rec = run(path)
    assert rec.steps["never"].attempts == 3 and rec.steps["never"].exit_code == 4
    assert len((tmp_path / "tries").read_text().splitlines()) == 3
    assert rec.exit_code == 1


def test_timeout_kills_the_whole_process_group(write_flow: Callable[..., Path], tmp_path: Path) -> None:
    path = write_flow("""
        kill_grace: 0.3s
        steps:
          - name: hang
            run: 'sleep 60 & echo $! > child.pid; trap "" TERM; sleep 60'
            timeout: 0.5s
    """)
    t0 = time.monotonic()
    rec = run(path)
    assert time.monotonic() - t0 < 10
    step = rec.steps["hang"]
    assert step.status == "failed" and step.exit_code == 124 and step.message == "timed out"
    child = int((tmp_path / "child.pid").read_text())
    assert wait_dead(child), "background grandchild survived the timeout"


def test_leftovers_in_the_group_are_stopped_when_a_step_ends(
    write_flow: Callable[..., Path], tmp_path: Path
) -> None:
    path = write_flow("""
        kill_grace: 0.3s
        steps:
          - {name: spawner, run: 'sleep 60 & echo $! > child.pid; echo started'}
          - {name: next, run: 'echo next'}
    """)
    rec = run(path)
    assert statuses(rec) == {"spawner": "succeeded", "next": "succeeded"}
    assert wait_dead(int((tmp_path / "child.pid").read_text()))


def test_outputs_flow_to_later_steps_only_through_env(
    write_flow: Callable[..., Path], tmp_path: Path
) -> None:
    path = write_flow("""
        params: {label: default}
        steps:
          - name: produce
            run: |
              echo "ROWS=42" >> "$FLOWSH_OUTPUT"
              { echo 'NOTE<<END'; printf 'line one\\nline two\\n'; echo END; } >> "$FLOWSH_OUTPUT"
          - name: consume
            run: 'printf "%s|%s|%s" "$ROWS" "$NOTE" "$label" > seen'
    """)
    evil = "$(touch pwned) `touch pwned2` ; rm -rf / * 'q' \"dq\"\nnext"
    rec = run(path, params={"label": evil})
    assert rec.steps["produce"].outputs == {"ROWS": "42", "NOTE": "line one\nline two"}
    assert (tmp_path / "seen").read_text() == f"42|line one\nline two|{evil}"
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "pwned2").exists()


def test_step_environment_and_workdir(write_flow: Callable[..., Path], tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "tool.sh").write_text('echo "tool in $PWD with $1" > out.txt\n')
    (tmp_path / ".env").write_text("FROM_FILE=ef\n")
    path = write_flow("""
        name: envtest
        env_file: .env
        env: {WF: wf}
        steps:
          - name: e
            run: 'echo "$FROM_FILE $WF $STEPVAR $FLOWSH_WORKFLOW $FLOWSH_STEP $FLOWSH_ATTEMPT" > env.txt'
            env: {STEPVAR: sv}
          - name: s
            workdir: sub
            script: tool.sh
            args: ["two words"]
    """)
    rec = run(path)
    assert rec.status == "succeeded"
    assert (tmp_path / "env.txt").read_text().strip() == "ef wf sv envtest e 1"
    assert (tmp_path / "sub" / "out.txt").read_text().strip() == \
        f"tool in {tmp_path / 'sub'} with two words"


def test_strict_mode_stops_at_the_failing_line(write_flow: Callable[..., Path], tmp_path: Path) -> None:
    path = write_flow("""
        steps:
          - name: s
            run: |
              false | true
              touch not-reached
    """)
    rec = run(path)
    assert rec.steps["s"].status == "failed" and not (tmp_path / "not-reached").exists()
    path = write_flow("""
        strict: false
        steps:
          - name: s
            run: |
              false
              touch reached
    """)
    assert run(path).status == "succeeded" and (tmp_path / "reached").exists()


def test_source_library_functions_as_steps(write_flow: Callable[..., Path], tmp_path: Path) -> None:
    (tmp_path / "lib.sh").write_text('greet() { echo "hello $1" > greeting; }\n')
    path = write_flow("""
        source: lib.sh
        params: {who: "the world"}
        steps:
          - {name: g, run: 'greet "$who"'}
    """)
    assert run(path).status == "succeeded"
    assert (tmp_path / "greeting").read_text().strip() == "hello the world"


def test_secrets_are_masked_in_logs_and_state(write_flow: Callable[..., Path]) -> None:
    path = write_flow("""
        params: {DB_PASSWORD: hunter2-secret, user: bob}
        steps:
          - {name: leak, run: 'echo "connecting as $user with $DB_PASSWORD"'}
    """)
    rec = run(path)
    log = Path(rec.steps["leak"].log_path or "").read_text()
    assert "hunter2-secret" not in log and "connecting as bob with ***" in log
    backend = open_backend()
    stored = backend.load_run(rec.run_id)
    backend.close()
    assert stored.params == {"DB_PASSWORD": "***", "user": "bob"}


def test_missing_command_and_exit_codes(write_flow: Callable[..., Path]) -> None:
    path = write_flow("""
        concurrency: 3
        steps:
          - {name: missing, run: 'no-such-command-xyz', needs: []}
          - {name: code, run: 'exit 200', needs: []}
          - {name: killed, run: 'kill -9 $$', needs: []}
    """)
    rec = run(path)
    assert rec.steps["missing"].exit_code == 127
    assert rec.steps["code"].exit_code == 200
    assert rec.steps["killed"].signal == 9 and rec.steps["killed"].exit_code == 137
    assert "SIGKILL" in (rec.steps["killed"].message or "")


def test_sigterm_to_flowsh_interrupts_steps_and_exits_130(
    write_flow: Callable[..., Path], tmp_path: Path
) -> None:
    path = write_flow("""
        kill_grace: 0.5s
        steps:
          - {name: long, run: 'sleep 60 & echo $! > child.pid; echo started; wait'}
          - {name: never, run: 'touch never'}
    """)
    proc = subprocess.Popen([sys.executable, "-m", "flowsh", "run", str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while not (tmp_path / "child.pid").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err
    assert wait_dead(int((tmp_path / "child.pid").read_text()))
    assert not (tmp_path / "never").exists()
    backend = open_backend()
    rec = backend.list_runs()[0]
    rec = backend.load_run(rec.run_id)
    backend.close()
    assert rec.status == "interrupted"
    assert rec.steps["long"].status == "interrupted" and rec.steps["never"].status == "interrupted"


@pytest.mark.parametrize("jobs", [1, 3])
def test_output_is_streamed_and_kept_per_step(
    write_flow: Callable[..., Path], cli: Callable[..., subprocess.CompletedProcess[str]],
    jobs: int,
) -> None:
    path = write_flow("""
        concurrency: 3
        steps:
          - {name: one, run: 'echo from-one; echo err-one >&2', needs: []}
          - {name: two, run: 'echo from-two', needs: []}
    """)
    res = cli("run", str(path), "-j", str(jobs))
    assert res.returncode == 0, res.stderr
    if jobs > 1:
        assert "[one] from-one" in res.stdout and "[two] from-two" in res.stdout
    else:
        assert "from-one\n" in res.stdout and "[one]" not in res.stdout
    assert "one: succeeded" in res.stderr  # progress lines go to stderr
    rid = res.stderr.split("run ")[1].split()[0]
    logs = cli("logs", rid, "one")
    assert logs.stdout == "from-one\nerr-one\n"


class _ScriptedExecutor:
    """An executor plugin whose outcomes the test chooses: the seam, exercised directly."""

    outcomes: dict[str, dict[str, object]] = {}

    def __init__(self, on_output: object = None, mask: object = None, **options: object) -> None:
        if options.get("refuse"):
            from flowsh.errors import UsageError

            raise UsageError("executor 'scripted': cannot reach its broker")
        self.done: list[tuple[str, object]] = []

    def start(self, request: object) -> None:
        from flowsh.executor import Outcome

        key = request.key  # type: ignore[attr-defined]
        now = time.time()
        fields: dict[str, object] = {"exit_code": 0, **self.outcomes.get(key, {})}
        self.done.append((key, Outcome(started_at=now, ended_at=now, **fields)))  # type: ignore[arg-type]

    def wait(self, timeout: float | None) -> list[tuple[str, object]]:
        done, self.done = self.done, []
        return done

    def wake(self) -> None: ...
    def cancel_all(self) -> None: ...
    def running(self) -> int:
        return len(self.done)
    def close(self) -> None: ...


@pytest.fixture
def scripted_executor() -> object:
    from flowsh import hookimpl, plugins

    class Plugin:
        @hookimpl
        def flowsh_register_executors(self, register: Callable[..., None]) -> None:
            register("scripted", _ScriptedExecutor)

    pm = plugins.get_plugin_manager()
    plugin = Plugin()
    pm.register(plugin, name="scripted-test")
    plugins._registries.clear()
    try:
        yield _ScriptedExecutor
    finally:
        pm.unregister(plugin)
        plugins._registries.clear()
        _ScriptedExecutor.outcomes = {}


def test_a_step_interrupted_elsewhere_fails_the_run(write_flow: Callable[..., Path],
                                                    scripted_executor: object) -> None:
    _ScriptedExecutor.outcomes = {"b": {"exit_code": 143, "interrupted": True}}
    path = write_flow("""
        executor: scripted
        steps:
          - {name: a, run: x}
          - {name: b, run: x}
          - {name: c, run: x}
          - {name: done, run: x, always: true}
    """)
    rec = run(path)
    assert statuses(rec) == {"a": "succeeded", "b": "interrupted", "c": "skipped",
                             "done": "succeeded"}
    assert rec.status == "failed" and rec.exit_code == 1


def test_an_executor_that_cannot_start_records_no_run(write_flow: Callable[..., Path],
                                                      scripted_executor: object) -> None:
    from flowsh.errors import UsageError

    path = write_flow("""
        executor: scripted
        executor_options: {refuse: true}
        steps: [{name: a, run: x}]
    """)
    with pytest.raises(UsageError, match="cannot reach its broker"):
        run(path)
    backend = open_backend()
    assert backend.list_runs() == []
    backend.close()


def test_second_ctrl_c_kills_at_once_and_records_the_run(
    write_flow: Callable[..., Path], tmp_path: Path
) -> None:
    path = write_flow("""
        kill_grace: 60s
        steps:
          - {name: stubborn, run: 'trap "" TERM; echo $$ > pid; while :; do sleep 0.1; done'}
    """)
    proc = subprocess.Popen([sys.executable, "-m", "flowsh", "run", "-q", str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while not (tmp_path / "pid").exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)  # TERM to the step, which ignores it: grace of 60 s
    time.sleep(0.5)
    assert proc.poll() is None
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)  # the second: no more waiting
    _, err = proc.communicate(timeout=30)
    assert time.monotonic() - t0 < 20
    assert proc.returncode == 130 and "Traceback" not in err and "interrupted" in err
    assert wait_dead(int((tmp_path / "pid").read_text()))
    backend = open_backend()
    rec = backend.load_run(backend.list_runs()[0].run_id)
    backend.close()
    assert rec.status == "interrupted" and rec.steps["stubborn"].status == "interrupted"


def test_secrets_from_env_file_inherited_env_and_outputs_are_masked(
    write_flow: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text("DB_PASSWORD=from-env-file-1\n")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "inherited-secret-2")
    path = write_flow("""
        env_file: .env
        steps:
          - name: a
            run: 'echo "pw=$DB_PASSWORD aws=$AWS_SECRET_ACCESS_KEY"; echo "API_TOKEN=minted-3" >> "$FLOWSH_OUTPUT"'
          - {name: b, run: 'echo "token=$API_TOKEN"; [ "$API_TOKEN" = minted-3 ]'}
    """)
    rec = run(path)
    assert rec.status == "succeeded"  # b got the real value
    logs = Path(rec.steps["a"].log_path or "").read_text() + \
        Path(rec.steps["b"].log_path or "").read_text()
    for secret in ("from-env-file-1", "inherited-secret-2", "minted-3"):
        assert secret not in logs
    assert "pw=*** aws=***" in logs and "token=***" in logs
    assert rec.steps["a"].outputs == {"API_TOKEN": "***"}


def test_resume_needs_an_undeclared_secret_param_again(write_flow: Callable[..., Path],
                                                      tmp_path: Path) -> None:
    from flowsh.errors import UsageError

    path = write_flow("""
        steps:
          - {name: a, run: '[ -e ok ] && [ "$API_TOKEN" = abcdef99 ]'}
    """)
    first = run(path, params={"API_TOKEN": "abcdef99"})
    assert first.status == "failed" and first.params == {"API_TOKEN": "***"}
    (tmp_path / "ok").touch()
    with pytest.raises(UsageError, match=r"pass API_TOKEN=\.\.\. again"):
        run(path, resume=first)
    again = run(path, resume=first, params={"API_TOKEN": "abcdef99"})
    assert again.status == "succeeded"


def test_a_sourced_library_cannot_override_params_env_or_outputs(
    write_flow: Callable[..., Path], tmp_path: Path
) -> None:
    (tmp_path / "lib.sh").write_text(
        'day=$(date +%F)\nMODE=library-default\nROWS=0\nUNSET_BY_FLOWSH=lib\n'
        'show() { echo "$day|$MODE|$ROWS|$UNSET_BY_FLOWSH" > seen; }\n')
    path = write_flow("""
        source: lib.sh
        params: {day: "2026-11-24"}
        env: {MODE: "from the file"}
        steps:
          - {name: count, run: 'echo ROWS=42 >> "$FLOWSH_OUTPUT"'}
          - {name: show, run: show}
    """)
    assert run(path).status == "succeeded"
    assert (tmp_path / "seen").read_text().strip() == "2026-11-24|from the file|42|lib"
