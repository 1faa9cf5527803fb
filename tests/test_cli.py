"""The `flowsh` command as a user meets it: exit codes, streams, formats, the ETL example."""

from __future__ import annotations

import json
import os
import pty
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.conftest import ROOT, run_cli

Cli = Callable[..., subprocess.CompletedProcess[str]]


def test_version_and_help(cli: Cli) -> None:
    res = cli("--version")
    assert res.returncode == 0 and res.stdout.startswith("flowsh 0.")
    res = cli("--help")
    assert res.returncode == 0
    for cmd in ("run", "resume", "retry", "validate", "graph", "schema", "status", "history",
                "logs", "prune"):
        assert cmd in res.stdout


def test_console_script_is_installed() -> None:
    exe = shutil.which("flowsh")
    assert exe is not None, "pip install should put `flowsh` on PATH"
    res = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False)
    assert res.returncode == 0 and res.stdout.startswith("flowsh ")


def test_validate_reports_each_file_in_one_line(write_flow: Callable[..., Path], cli: Cli) -> None:
    good = write_flow("steps: [{name: a, run: 'true'}]", "good.yaml")
    bad = write_flow("steps:\n  - name: a\n    run: x\n    needs: [zz]\n", "bad.yaml")
    res = cli("validate", str(good), str(bad))
    assert res.returncode == 2
    assert f"{good}: ok (good, 1 step)" in res.stdout  # issue 18: not "1 steps"
    assert res.stderr == f"{bad}:4:13: step 'a' needs unknown step 'zz'\n"
    res = cli("validate", "--json", str(good), str(bad))
    data = json.loads(res.stdout)
    assert [d["ok"] for d in data] == [True, False]


def test_invalid_file_never_runs_a_step(write_flow: Callable[..., Path], tmp_path: Path,
                                        cli: Cli) -> None:
    path = write_flow("""
        steps:
          - {name: a, run: 'touch ran'}
          - {name: b, run: 'true', retries: lots}
    """)
    res = cli("run", str(path))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.startswith(f"flowsh: error: {path}:3:")
    assert not (tmp_path / "ran").exists()


def test_bad_usage_exit_2(write_flow: Callable[..., Path], cli: Cli) -> None:
    path = write_flow("steps: [{name: a, run: 'true'}]")
    for args in (["run", str(path), "not-a-pair"], ["run", str(path), "-j", "0"],
                 ["run", str(path), "--overlap", "sometimes"], ["graph", str(path), "-f", "png"],
                 ["frobnicate"]):
        res = cli(*args)
        assert res.returncode == 2, (args, res.stderr)
        assert "Traceback" not in res.stderr


def test_graph_formats(write_flow: Callable[..., Path], cli: Cli) -> None:
    path = write_flow("""
        steps:
          - {name: a, run: x}
          - {name: b, run: x, needs: [a]}
          - {name: c, run: x, needs: [a]}
          - {name: d, run: x, needs: [b, c]}
    """)
    ascii_ = cli("graph", str(path)).stdout
    assert ascii_.splitlines()[0] == "a" and "d  <- b, c" in ascii_
    mermaid = cli("graph", str(path), "--format", "mermaid").stdout
    assert mermaid.startswith("flowchart TD") and mermaid.count("-->") == 4
    dot = cli("graph", str(path), "--format", "dot").stdout
    assert dot.startswith("digraph") and '"b" -> "d";' in dot
    if shutil.which("dot"):
        subprocess.run(["dot", "-Tsvg"], input=dot, text=True, check=True, capture_output=True)


def test_schema_validates_the_example(cli: Cli) -> None:
    schema = json.loads(cli("schema").stdout)
    assert schema["title"] == "flowsh workflow" and "steps" in schema["required"]


def test_dry_run_prints_the_plan_and_runs_nothing(write_flow: Callable[..., Path],
                                                  tmp_path: Path, cli: Cli) -> None:
    path = write_flow("""
        params: {day: "2026-01-01"}
        steps:
          - {name: a, run: 'touch ran', retries: 2, timeout: 1m}
          - {name: b, run: 'true', needs: []}
          - {name: c, run: 'true', needs: [a, b], always: true}
    """)
    res = cli("run", "--dry-run", str(path), "day=2026-11-26")
    assert res.returncode == 0
    assert "stage 1: a, b" in res.stdout and "stage 2: c" in res.stdout
    assert "retries=2" in res.stdout and "timeout=60s" in res.stdout
    assert "day='2026-11-26'" in res.stdout
    assert not (tmp_path / "ran").exists()


def test_json_events(write_flow: Callable[..., Path], cli: Cli) -> None:
    path = write_flow("""
        steps:
          - {name: a, run: 'echo "N=1" >> "$FLOWSH_OUTPUT"'}
          - {name: b, run: 'exit 2', retries: 1, retry_delay: 0}
    """)
    res = cli("run", "--json", str(path))
    assert res.returncode == 1
    events = [json.loads(line) for line in res.stdout.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds == ["run_started", "step_started", "step_finished", "step_started",
                     "step_retrying", "step_started", "step_finished", "run_finished"]
    assert events[2]["outputs"] == {"N": "1"}
    assert events[-2]["status"] == "failed" and events[-2]["exit_code"] == 2
    assert events[-1]["status"] == "failed" and events[-1]["exit_code"] == 1


def test_quiet_prints_nothing_on_success(write_flow: Callable[..., Path], cli: Cli) -> None:
    path = write_flow("steps: [{name: a, run: 'echo hello'}]")
    res = cli("run", "-q", str(path))
    assert (res.returncode, res.stdout, res.stderr) == (0, "", "")
    path = write_flow("steps: [{name: a, run: 'exit 5'}]", "bad.yaml")
    res = cli("run", "-q", str(path))
    assert res.returncode == 1 and "a: failed" in res.stderr


def test_tty_shows_live_progress(write_flow: Callable[..., Path]) -> None:
    """Under a real pseudo-terminal: colour codes and the step list, not plain lines."""
    path = write_flow("""
        steps:
          - {name: first, run: 'echo one; sleep 0.6'}
          - {name: second, run: 'echo two'}
    """)
    pid, fd = pty.fork()
    if pid == 0:  # child: becomes flowsh on the terminal
        os.execvpe(sys.executable, [sys.executable, "-m", "flowsh", "run", str(path)],
                   {**os.environ, "TERM": "xterm-256color", "COLUMNS": "100"})
    chunks = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            data = os.read(fd, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    _, status = os.waitpid(pid, 0)
    screen = b"".join(chunks).decode("utf-8", "replace")
    assert os.waitstatus_to_exitcode(status) == 0, screen
    assert "\x1b[" in screen  # colour / cursor control: this is the TTY view
    assert "✓" in screen and "first" in screen and "second" in screen
    assert "one" in screen and "two" in screen


def test_etl_example_end_to_end(tmp_path: Path, cli: Cli) -> None:
    example = tmp_path / "etl"
    shutil.copytree(ROOT / "examples" / "etl", example, ignore=shutil.ignore_patterns("work"))
    res = cli("run", str(example / "etl.yaml"), cwd=tmp_path)  # cwd elsewhere, like cron
    assert res.returncode == 0, res.stderr
    assert "extracted=11 transformed=11 loaded=11" in res.stdout
    import sqlite3

    db = sqlite3.connect(example / "work" / "warehouse.db")
    assert db.execute("SELECT count(*) FROM orders").fetchone()[0] == 11
    usd = db.execute("SELECT amount_usd FROM orders WHERE order_id = 1003").fetchone()[0]
    assert abs(usd - 45.00 * 1.08) < 0.01

    res = cli("run", str(example / "etl.yaml"), "day=2026-11-24", "simulate_failure=load")
    assert res.returncode == 1 and "load: failed" in res.stderr
    run_id = res.stderr.split("resume ")[-1].split()[0]
    res = cli("resume", run_id, "simulate_failure=")
    assert res.returncode == 0, res.stderr
    assert "extract: started" not in res.stderr and "load: started" in res.stderr
    assert "extracted=5 transformed=5" in res.stdout  # outputs restored from the state


def test_shell_completion_script_and_answers(cli: Cli) -> None:
    script = cli("--show-completion", "bash")
    assert script.returncode == 0 and "_flowsh_completion" in script.stdout
    # What bash's completion function asks the program for, as it would ask it:
    res = cli(env={"_FLOWSH_COMPLETE": "complete_bash", "COMP_WORDS": "flowsh hist",
                   "COMP_CWORD": "1"})
    assert "history" in res.stdout.split()


def test_dry_run_masks_secret_params(write_flow: Callable[..., Path], cli: Cli) -> None:
    path = write_flow("params: {API_TOKEN: s3cr3t-value, user: bob}\nsteps: [{name: a, run: x}]")
    res = cli("run", "--dry-run", str(path), "API_TOKEN=other-s3cr3t")
    assert "s3cr3t" not in res.stdout and "API_TOKEN='***'" in res.stdout
    assert "user='bob'" in res.stdout


def test_the_failure_hint_names_the_store_and_pastes(write_flow, tmp_path):
    import shlex
    import subprocess
    import sys

    flow = write_flow("steps: [{name: a, run: 'test -e ok'}]")
    store = f"json://{tmp_path}/my store"
    res = run_cli("run", str(flow), "--state", store)
    assert res.returncode == 1
    [hint] = [ln for ln in res.stderr.splitlines() if "continue: flowsh resume" in ln]
    resume = hint.split("continue: ", 1)[1]
    assert resume.endswith(f" --state {shlex.quote(store)}")
    (flow.parent / "ok").touch()
    argv = [sys.executable, "-m", *shlex.split(resume)]
    done = subprocess.run(argv, capture_output=True, text=True, cwd=flow.parent, check=False)
    assert done.returncode == 0, done.stderr


def test_start_up_leaves_its_imports_to_no_collection_and_the_collector_on(tmp_path: Path) -> None:
    """`flowsh` pauses the cycle collector while it imports, freezes what the imports made
    (they live as long as the process) and turns the collector back on before the command
    runs; `run` freezes the loaded workflow too."""
    flow = tmp_path / "w.yaml"
    flow.write_text("steps: [{name: a, run: 'true'}]\n")
    code = (
        "import gc, sys\n"
        "import flowsh.engine\n"
        "seen = []\n"
        "real = flowsh.engine.run_workflow\n"
        "def spy(*a, **k):\n"
        "    seen.append((gc.isenabled(), gc.get_freeze_count()))\n"
        "    return real(*a, **k)\n"
        "flowsh.engine.run_workflow = spy\n"
        "from flowsh.__main__ import main\n"
        f"sys.argv = ['flowsh', 'run', '-q', {str(flow)!r}]\n"
        "try:\n"
        "    main()\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(seen[0][0], seen[0][1] > 10000)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "FLOWSH_HOME": str(tmp_path / "home")}, check=True)
    assert out.stdout.split() == ["True", "True"], out.stderr


def test_status_and_history_read_without_making_a_store(cli: Cli) -> None:
    """Reading commands on a fresh home say there are no runs, and create no database."""
    home = Path(os.environ["FLOWSH_HOME"])
    res = cli("status")
    assert (res.returncode, res.stderr) == (4, "flowsh: error: no runs recorded yet\n")
    res = cli("status", "abc")
    assert res.returncode == 4 and "no run 'abc' in sqlite://" in res.stderr
    res = cli("history")
    assert (res.returncode, res.stderr) == (0, "no runs recorded\n")
    res = cli("history", "--json")
    assert (res.returncode, json.loads(res.stdout)) == (0, [])
    assert not (home / "flowsh.db").exists()


def test_a_path_that_is_not_utf8_is_refused_before_anything_runs(tmp_path: Path,
                                                                  cli: Cli) -> None:
    # A latin-1 name: the run's record keeps the path as text, which SQLite refused with a
    # UnicodeEncodeError traceback (exit 1) once the run had begun; validate said "ok".
    flow = tmp_path / os.fsdecode(b"caf\xe9.yaml")
    flow.write_text("steps:\n  - {name: a, run: 'touch ran'}\n")
    for args in (("run", str(flow)), ("run", "-q", str(flow)), ("validate", str(flow))):
        res = cli(*args, cwd=tmp_path)
        assert res.returncode == 2, (args, res.stderr)
        assert "Traceback" not in res.stderr
        assert "path is not UTF-8 text" in res.stderr, res.stderr
    assert not (tmp_path / "ran").exists()
