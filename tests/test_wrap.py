"""`flowsh wrap`: real commands through the real CLI; exit codes are the command's own."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

FLOWSH = [sys.executable, "-m", "flowsh"]


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 60
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FLOWSH, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, check=False)


def wrap(*args: str, cwd: Path | None = None, timeout: float = 60
         ) -> subprocess.CompletedProcess[str]:
    return run_cli("wrap", *args, cwd=cwd, timeout=timeout)


def test_arguments_with_spaces_and_quotes_arrive_intact(tmp_path: Path) -> None:
    args = ["a b", "it's", 'say "hi"', "$HOME", "`id`", "*", "", "back\\slash", "x;y|z"]
    r = wrap("--", "printf", "<%s>\\n", *args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "".join(f"<{a}>\n" for a in args)
    assert r.stderr == ""  # nothing from flowsh when all is well


def test_command_options_need_no_double_dash(tmp_path: Path) -> None:
    (tmp_path / "f1").write_text("")
    r = wrap("ls", "-1a", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "f1" in r.stdout.split()


@pytest.mark.parametrize("code", [0, 1, 2, 3, 42, 64, 75, 124, 126, 127, 128, 200, 254, 255])
def test_exit_code_is_the_commands_own(tmp_path: Path, code: int) -> None:
    r = wrap("--", "bash", "-c", f"echo before; exit {code}", cwd=tmp_path)
    assert r.returncode == code
    assert r.stdout == "before\n"


def test_every_exit_code_0_to_255(tmp_path: Path) -> None:
    # In-process, through the engine, so the whole range stays quick.
    from flowsh.commands.wrap import build_workflow, exit_code_of
    from flowsh.engine import RunOptions, run_workflow

    script = tmp_path / "exits.sh"
    script.write_text('exit "$1"\n')
    seen = []
    for code in range(256):
        wf = build_workflow(["bash", str(script), str(code)], name="codes", overlap="allow")
        run = run_workflow(wf, RunOptions())
        seen.append(exit_code_of(run))
        assert run.steps["codes"].exit_code == code
    assert seen == list(range(256))


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGKILL, 137),
                                           (signal.SIGSEGV, 139), (signal.SIGUSR1, 138)])
def test_death_by_signal(tmp_path: Path, sig: int, code: int) -> None:
    r = wrap("--", "bash", "-c", f"kill -{int(sig)} $$", cwd=tmp_path)
    assert r.returncode == code
    assert f"killed by {signal.Signals(sig).name}" in r.stderr


def test_set_e_script_stops_at_the_failure(tmp_path: Path) -> None:
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/bash\nset -e\necho one\ngrep -q nothing /dev/null\necho two\n")
    script.chmod(0o755)
    r = wrap("./job.sh", cwd=tmp_path)
    assert (r.returncode, r.stdout) == (1, "one\n")


def test_stdin_is_not_inherited(tmp_path: Path) -> None:
    # A function reading stdin gets EOF at once instead of eating flowsh's stdin or hanging.
    script = tmp_path / "reader.sh"
    script.write_text('count() { local n=0; while read -r _; do n=$((n+1)); done; '
                      'echo "read $n"; }\ncount\n')
    p = subprocess.run([*FLOWSH, "wrap", "--", "bash", str(script)], input="a\nb\nc\n",
                       capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert (p.returncode, p.stdout) == (0, "read 0\n")


def test_timeout_gives_124_and_a_trapping_script_gets_to_clean_up(tmp_path: Path) -> None:
    script = tmp_path / "trapper.sh"
    script.write_text(
        "#!/bin/bash\n"
        "trap 'echo cleaning up; rm -f lockfile; exit 3' TERM\n"
        "touch lockfile\necho started\n"
        "while :; do sleep 0.05; done\n")
    script.chmod(0o755)
    r = wrap("--timeout", "0.5s", "--kill-grace", "2s", "./trapper.sh", cwd=tmp_path)
    assert r.returncode == 124
    # The whole group gets TERM: bash may also report its `sleep` as "Terminated".
    lines = r.stdout.splitlines()
    assert (lines[0], lines[-1]) == ("started", "cleaning up")
    assert not (tmp_path / "lockfile").exists()
    assert "timed out" in r.stderr


def test_timeout_kills_a_script_that_ignores_term(tmp_path: Path) -> None:
    script = tmp_path / "stubborn.sh"
    script.write_text("trap '' TERM\necho $$ > pid\nwhile :; do sleep 0.05; done\n")
    r = wrap("--timeout", "0.3s", "--kill-grace", "0.2s", "--", "bash", "stubborn.sh",
             cwd=tmp_path)
    assert r.returncode == 124
    pid = int((tmp_path / "pid").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_retries_until_success(tmp_path: Path) -> None:
    r = wrap("--retries", "3", "--retry-delay", "0", "--name", "flaky", "--",
             "bash", "-c", 'n=$(cat n 2>/dev/null || echo 0); echo $((n+1)) > n; '
             '[ "$n" -ge 2 ] && echo ok || { echo "fail $n"; exit 9; }', cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "fail 0\nfail 1\nok\n"
    assert (tmp_path / "n").read_text() == "3\n"
    hist = json.loads(run_cli("history", "--json").stdout)
    assert hist[0]["workflow"] == "flaky"
    assert hist[0]["status"] == "succeeded"


def test_retries_exhausted_keep_the_last_exit_code(tmp_path: Path) -> None:
    r = wrap("--retries", "1", "--retry-delay", "0", "--", "bash", "-c", "exit 7", cwd=tmp_path)
    assert r.returncode == 7
    assert "retrying" in r.stderr


def test_quiet_on_success(tmp_path: Path) -> None:
    r = wrap("--quiet-on-success", "--", "bash", "-c", "echo noisy; echo more >&2", cwd=tmp_path)
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    r = wrap("--quiet-on-success", "--", "bash", "-c", "echo noisy; echo more >&2; exit 5",
             cwd=tmp_path)
    assert r.returncode == 5
    assert r.stdout == "noisy\nmore\n"
    assert "exit code 5" in r.stderr


def test_runs_appear_in_history_and_logs(tmp_path: Path) -> None:
    wrap("--name", "nightly-backup", "--", "echo", "backed up", cwd=tmp_path)
    wrap("--name", "nightly-backup", "--", "false", cwd=tmp_path)
    hist = json.loads(run_cli("history", "nightly-backup", "--json").stdout)
    assert [h["status"] for h in hist] == ["failed", "succeeded"]
    logs = run_cli("logs", hist[1]["run_id"])
    assert "backed up" in logs.stdout


def test_log_file_appends_each_run(tmp_path: Path) -> None:
    log = tmp_path / "job.log"
    wrap("--log", str(log), "--name", "j", "--", "echo", "first", cwd=tmp_path)
    wrap("--log", str(log), "--name", "j", "--", "bash", "-c", "echo second; exit 4",
         cwd=tmp_path)
    lines = log.read_text().splitlines()
    assert lines[1] == "first" and lines[3] == "second"
    assert lines[0].startswith("=== ") and "j run " in lines[0] and "succeeded (exit 0)" in lines[0]
    assert "failed (exit 4)" in lines[2]
    assert oct(log.stat().st_mode & 0o777) == "0o600"


def test_overlap_skip_exits_75_without_running(tmp_path: Path) -> None:
    first = subprocess.Popen([*FLOWSH, "wrap", "--name", "locked", "--", "bash", "-c",
                              "touch started; sleep 3"], cwd=tmp_path,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "started").exists():
            assert time.monotonic() < deadline, "first run never started"
            assert first.poll() is None
            time.sleep(0.02)
        r = wrap("--name", "locked", "--", "touch", "second-ran", cwd=tmp_path)
        assert r.returncode == 75
        assert "already running" in r.stderr
        assert not (tmp_path / "second-ran").exists()
        r = wrap("--name", "locked", "--overlap", "allow", "--", "touch", "third-ran",
                 cwd=tmp_path)
        assert r.returncode == 0
        assert (tmp_path / "third-ran").exists()
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=30)


def test_interrupt_gives_130(tmp_path: Path) -> None:
    p = subprocess.Popen([*FLOWSH, "wrap", "--kill-grace", "0.2s", "--", "bash", "-c",
                          "touch started; sleep 30"], cwd=tmp_path,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not (tmp_path / "started").exists():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    p.send_signal(signal.SIGINT)
    assert p.wait(timeout=30) == 130


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--timeout", "soon", "--", "true"], "--timeout"),
        (["--overlap", "maybe", "--", "true"], "--overlap"),
        (["--name", "bad name", "--", "true"], "--name"),
        (["--retries", "-1", "--", "true"], "--retries"),
    ],
)
def test_bad_options_are_usage_errors(tmp_path: Path, args: list[str], message: str) -> None:
    r = wrap(*args, cwd=tmp_path)
    assert r.returncode == 2
    assert message in r.stderr
    assert "Traceback" not in r.stderr


def test_missing_command_is_a_usage_error(tmp_path: Path) -> None:
    r = wrap(cwd=tmp_path)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr


def test_notify_wires_the_workflow_model() -> None:
    from flowsh.commands.wrap import build_workflow, default_name

    wf = build_workflow(["./backup.sh", "--full"], notify=["ops", "sms"], timeout="1h",
                        retries=2, retry_delay="30s")
    assert wf.name == default_name(["./backup.sh", "--full"])
    assert wf.name.startswith("backup-") and len(wf.name) == len("backup-") + 6
    assert default_name(["./backup.sh"]) != wf.name  # other arguments: another job, lock
    assert default_name(["./backup.sh", "--full"], cwd="/elsewhere") != wf.name
    assert wf.notify.routes == {"critical": ["ops", "sms"]}
    assert wf.notify.events == {"run_failed": "critical"}
    step = wf.steps[0]
    assert (step.timeout, step.retries, step.retry_delay) == (3600.0, 2, 30.0)
    assert step.run == "exec ./backup.sh --full"


def test_notify_sends_an_alert_on_failure(tmp_path: Path) -> None:
    pytest.importorskip("flowsh.notify", reason="alerts (flowsh.notify) not merged yet")
    alerts = tmp_path / "alerts.txt"
    cfg = Path(os.environ["XDG_CONFIG_HOME"]) / "flowsh" / "config.yaml"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text(f"notify:\n  channels:\n    ops: {{type: command, run: 'cat >> {alerts}'}}\n")
    assert wrap("--notify", "ops", "--", "true", cwd=tmp_path).returncode == 0
    assert not alerts.exists()
    r = wrap("--notify", "ops", "--name", "nightly", "--", "bash", "-c", "exit 3", cwd=tmp_path)
    assert r.returncode == 3
    assert "nightly" in alerts.read_text()
    r = wrap("--notify", "nosuch", "--", "true", cwd=tmp_path)
    assert r.returncode == 4
    assert "nosuch" in r.stderr


def test_the_next_run_stops_what_a_killed_wrapper_left_running(tmp_path: Path) -> None:
    """kill -9 of `flowsh wrap` frees its lock while its job runs on; the next tick (a new
    run, not a resume) must stop that job first, not run a second copy beside it."""
    from tests.conftest import alive, wait_dead

    job = tmp_path / "job.sh"
    job.write_text("#!/bin/bash\n[ -e first ] && { echo second >> runs; exit 0; }\n"
                   "touch first; echo $$ > pid; echo start >> runs; sleep 60; echo end >> runs\n")
    job.chmod(0o755)
    env = {**os.environ, "FLOWSH_LOAD_ENTRYPOINTS": "0"}
    first = subprocess.Popen([sys.executable, "-m", "flowsh", "wrap", "--", str(job)],
                             cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not (tmp_path / "pid").exists() or not (tmp_path / "pid").read_text().strip():
        assert time.monotonic() < deadline and first.poll() is None
        time.sleep(0.05)
    orphan = int((tmp_path / "pid").read_text())
    first.kill()
    first.wait()
    assert alive(orphan)  # the job outlived its runner
    res = wrap("--", str(job), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    # Killed before or after the runner recorded the job's pid: stopped either way.
    assert ("stopped it before starting a new run" in res.stderr
            or "it had not recorded still running" in res.stderr), res.stderr
    assert wait_dead(orphan)
    assert (tmp_path / "runs").read_text() == "start\nsecond\n"


def test_crontab_examples_call_flowsh_by_its_absolute_path() -> None:
    """rt18 #9: a bare `flowsh` in a crontab line is `flowsh: not found` (127) for a venv or
    pipx install (cron's PATH is /usr/bin:/bin); a relative script is looked up in $HOME."""
    import re as _re

    root = Path(__file__).resolve().parent.parent
    text = (root / "docs" / "wrapping.md").read_text()
    lines = [ln for block in _re.findall(r"```cron\n(.*?)```", text, _re.S)
             for ln in block.splitlines() if ln.strip() and not ln.startswith("#")]
    assert lines
    for line in lines:
        command = line.split(None, 5)[5]
        assert command.startswith("/") and command.split()[0].endswith("/flowsh"), line
        assert command.split(" -- ", 1)[1].startswith("/"), line
    r = subprocess.run([*FLOWSH, "wrap", "--help"], capture_output=True, text=True,
                       env={**os.environ, "COLUMNS": "200"}, timeout=60, check=False)
    example = " ".join(r.stdout.split())
    assert "* * * /home/me/.venv/bin/flowsh wrap " in example
    assert "-- /srv/bin/backup.sh" in example and "command -v flowsh" in example
