"""Run events reach plugins through pluggy, on the run's own thread (flowsh.events).

A slow plugin cannot hold the run loop; wrappers and call monitoring see every call; the
trace prints every call; each hook gets the run's RunContext; plugins import flowsh.api
only.
"""

from __future__ import annotations

import re
from collections.abc import Generator
from pathlib import Path
from typing import Any

from flowsh import hookimpl, plugins
from flowsh.engine import RunOptions, run_workflow
from flowsh.events import RunContext
from flowsh.loader import load_workflow
from tests.conftest import ROOT, run_cli


def test_a_slow_notifier_does_not_hold_a_timeout(write_flow, tmp_path):
    # Each attempt writes its start time; the step_retry alert takes 6 s. Were hooks on the
    # loop (as before), the second attempt would start >= 7 s after the first.
    flow = write_flow(f"""
        name: slowhook
        notify:
          channels:
            slow: {{type: command, run: 'sleep 6; echo sent >> {tmp_path}/alerts', timeout: 20s}}
          events: {{step_retry: warning}}
          routes: {{warning: [slow]}}
        steps:
          - name: s
            run: 'date +%s.%N >> {tmp_path}/starts; sleep 30'
            timeout: 1s
            retries: 1
            retry_delay: 0
            jitter: 0
    """)
    run = run_workflow(load_workflow(flow), RunOptions())
    starts = [float(x) for x in (tmp_path / "starts").read_text().split()]
    assert len(starts) == 2 and run.steps["s"].exit_code == 124
    assert starts[1] - starts[0] < 4.0, starts  # 1 s timeout + kill; never the hook's 6 s
    # The run ended only after its alert went out (drained at the end).
    assert (tmp_path / "alerts").read_text() == "sent\n"


def test_a_wrapper_hookimpl_and_call_monitoring_see_run_events(write_flow):
    seen: list[str] = []

    class Wrapper:
        @hookimpl(wrapper=True)
        def flowsh_run_finished(self, ctx: RunContext) -> Generator[None, Any, Any]:
            seen.append(f"before {ctx.run.status}")
            result = yield
            seen.append("after")
            return result

    pm = plugins.get_plugin_manager()
    pm.register(Wrapper(), name="wrapper")
    monitored: list[str] = []
    undo = pm.add_hookcall_monitoring(
        lambda name, impls, kwargs: monitored.append(name), lambda *a: None)
    try:
        run_workflow(load_workflow(write_flow("steps: [{name: a, run: 'true'}]")), RunOptions())
    finally:
        undo()
    assert seen == ["before succeeded", "after"]
    assert [m for m in monitored if not m.startswith("flowsh_register_")] == [
        "flowsh_run_started", "flowsh_step_started", "flowsh_step_finished",
                         "flowsh_run_finished"]


def test_hooks_get_the_run_context_and_a_copy_of_the_step(write_flow):
    got: list[tuple[str, str, str, bool]] = []

    class Spy:
        @hookimpl
        def flowsh_step_started(self, ctx: RunContext, step: Any) -> None:
            ctx.slot("spy")["n"] = ctx.slot("spy").get("n", 0) + 1
            got.append(("started", step.status, ctx.masker("pw=hunter22"),
                        ctx.run_dir.is_dir()))

        @hookimpl
        def flowsh_run_finished(self, ctx: RunContext) -> None:
            got.append(("finished", str(ctx.slot("spy")["n"]), str(ctx.notify.long_after),
                        ctx.run.steps["a"] is not None))

    plugins.get_plugin_manager().register(Spy(), name="spy")
    flow = write_flow("""
        params: {DB_PASSWORD: hunter22}
        steps: [{name: a, run: 'true'}, {name: b, run: 'true'}]
    """)
    run_workflow(load_workflow(flow), RunOptions())
    # The step as it was when it started (the engine has since marked it succeeded); the
    # run's masker knows the secret param.
    assert got == [("started", "running", "pw=***", True), ("started", "running", "pw=***", True),
                   ("finished", "2", "None", True)]


def test_events_reach_plugins_while_the_run_goes_on(write_flow, tmp_path):
    """The dispatcher lets events gather a moment (events.LINGER), never until the next
    one comes or the run ends: step b waits for what a plugin did at a's end."""

    class Marker:
        @hookimpl
        def flowsh_step_finished(self, step: Any) -> None:
            (tmp_path / f"{step.name}.done").touch()

    plugins.get_plugin_manager().register(Marker(), name="marker")
    flow = write_flow(f"""
        steps:
          - {{name: a, run: 'true'}}
          - name: b
            needs: [a]
            run: 'for i in $(seq 200); do [ -e {tmp_path}/a.done ] && exit 0; sleep 0.05; done; exit 1'
    """)
    run = run_workflow(load_workflow(flow), RunOptions())
    assert run.status == "succeeded", run.steps["b"]


def test_trace_plugins_prints_every_hook_call(write_flow):
    flow = write_flow("steps: [{name: a, run: 'true'}]")
    res = run_cli("run", str(flow), "--quiet", env={"FLOWSH_TRACE_PLUGINS": "1"})
    assert res.returncode == 0, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("flowsh: trace: ")]
    hooks = {ln.split()[2] for ln in lines}
    assert {"flowsh_run_started", "flowsh_step_started", "flowsh_step_finished",
            "flowsh_run_finished", "flowsh_register_executors"} <= hooks
    assert any(ln.split()[3] == "log_csv" and ln.endswith(" ms") for ln in lines), lines


_IMPORT = re.compile(r"^\s*(?:from|import)\s+(flowsh(?:\.[\w.]+)?)\b", re.MULTILINE)


def _flowsh_imports(path: Path) -> list[str]:
    # A regex, not ast: the scaffold's templates are Jinja, not Python yet.
    text = path.read_text()
    return [f"{path.relative_to(ROOT)}:{text.count(chr(10), 0, m.start()) + 1}: {m.group(1)}"
            for m in _IMPORT.finditer(text)]


def test_plugins_and_the_scaffold_import_only_flowsh_api():
    files = [*sorted((ROOT / "plugins").glob("*/**/*.py")),
             *sorted((ROOT / "templates" / "plugin").rglob("*.py.j2"))]
    assert len(files) >= 8
    imports = [imp for f in files for imp in _flowsh_imports(f)]
    assert len(imports) >= 6  # the scan sees them
    bad = [imp for imp in imports if not imp.endswith(": flowsh.api")]
    assert not bad, "\n".join(bad)


def test_every_api_name_resolves():
    import flowsh.api as api

    missing = [n for n in api.__all__ if getattr(api, n, None) is None]
    assert not missing


def _wait_file(path: Path, proc: Any = None, seconds: float = 60) -> str:
    import time

    end = time.monotonic() + seconds
    while not (path.exists() and path.read_text().strip()):
        assert time.monotonic() < end, f"{path} never written"
        assert proc is None or proc.poll() is None, "the runner ended first"
        time.sleep(0.05)
    return path.read_text().strip()


def test_slow_alerts_go_out_side_by_side_and_the_critical_one_is_not_lost(write_flow, tmp_path):
    """Red team rt11b #1: one 6 s alert after another (3 retries + run_failed) held the CSV
    log behind them and the run_failed alert was dropped at the 120 s drain limit."""
    import time

    flow = write_flow(f"""
        notify:
          channels:
            slow: {{type: command, run: 'sleep 6; echo "$FLOWSH_ALERT_EVENT" >> {tmp_path}/alerts', timeout: 30s}}
          events: {{step_retry: warning, run_failed: critical}}
          routes: {{warning: [slow], critical: [slow]}}
        steps:
          - {{name: a, run: "false", retries: 3, retry_delay: 0, jitter: 0}}
    """)
    start = time.monotonic()
    run = run_workflow(load_workflow(flow), RunOptions())
    took = time.monotonic() - start
    assert run.exit_code == 1
    assert sorted((tmp_path / "alerts").read_text().split()) == [
        "run_failed", "step_retry", "step_retry", "step_retry"]
    assert took < 18, took  # side by side: ~6 s; one after another it was 24 s


def test_a_command_alert_never_outlives_its_limit_or_a_killed_runner(write_flow, tmp_path):
    """rt11b #2: kill -9 of the runner while an alert runs left the command running for
    ever (its timeout was the runner's to enforce)."""
    import os
    import signal
    import subprocess
    import sys

    from tests.conftest import wait_dead

    flow = write_flow(f"""
        notify:
          channels:
            hang: {{type: command, run: 'echo $$ > {tmp_path}/notifier.pid; exec sleep 1000', timeout: 3s}}
          routes: {{critical: [hang]}}
          events: {{run_failed: critical}}
        steps: [{{name: a, run: "false"}}]
    """)
    runner = subprocess.Popen([sys.executable, "-m", "flowsh", "run", str(flow), "-q"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    notifier = int(_wait_file(tmp_path / "notifier.pid", runner))
    os.kill(runner.pid, signal.SIGKILL)
    runner.wait()
    assert wait_dead(notifier, 30)  # timeout(1) ends it at its 3 s limit


def test_sigterm_while_alerts_go_out_exits_130(write_flow, tmp_path):
    """rt11b #3: TERM during the end-of-run drain killed flowsh with 143."""
    import os
    import signal
    import subprocess
    import sys

    flow = write_flow(f"""
        notify:
          channels:
            slow: {{type: command, run: 'echo $$ > {tmp_path}/notifier.pid; sleep 20', timeout: 30s}}
          routes: {{critical: [slow]}}
          events: {{run_failed: critical}}
        steps: [{{name: a, run: "false"}}]
    """)
    runner = subprocess.Popen([sys.executable, "-m", "flowsh", "run", str(flow), "-q"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _wait_file(tmp_path / "notifier.pid", runner)
    os.kill(runner.pid, signal.SIGTERM)
    _, err = runner.communicate(timeout=60)
    assert runner.returncode == 130, err
    assert "alerts may not have gone out" in err
