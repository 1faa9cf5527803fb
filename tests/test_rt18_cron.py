"""The cron line and `--quiet-on-success --log` on an operator's bad night (issue 18 review):
hostile paths run the way cron runs them, a crash then the next tick, warnings, a symlinked
or full log.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flowsh.loader import load_workflow
from flowsh.schedjob import render_crontab
from tests.conftest import alive, run_cli, wait_dead

FLOW = """\
name: nightly
schedule: "0 2 * * *"
steps:
  - {name: a, run: 'echo "a ran" >> ran.txt; echo "out of a"'}
  - {name: b, run: '[ -e fail ] && { echo "b broke" >&2; exit 3; }; echo "b ran" >> ran.txt'}
"""


def cron_command(entry: str) -> tuple[str, str]:
    """(command, stdin) of a crontab entry's command field, as Vixie cron splits it: an
    unescaped `%` ends the command (the rest, `%` as newlines, is stdin); `\\%` is `%`."""
    out: list[str] = []
    i = 0
    while i < len(entry):
        if entry.startswith("\\%", i):
            out.append("%")
            i += 2
        elif entry[i] == "%":
            return "".join(out), entry[i + 1:].replace("%", "\n")
        else:
            out.append(entry[i])
            i += 1
    return "".join(out), ""


def cron(entry: str, home: Path, now: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a crontab entry's command as cron does: /bin/sh -c, cron's minimal environment.
    `now` (FLOWSH_NOW): a tick of another day; two ticks of one slot run it once (SLOT-8)."""
    command, stdin = cron_command(entry)
    env = {"HOME": str(home), "LOGNAME": "cronuser", "SHELL": "/bin/sh",
           "PATH": "/usr/bin:/bin", **({"FLOWSH_NOW": now} if now else {})}
    return subprocess.run(["/bin/sh", "-c", command], cwd=home, env=env, input=stdin,
                          capture_output=True, text=True, timeout=120, check=False)


def entry_of(flow: Path, **kw: str) -> str:
    block = render_crontab(load_workflow(flow), **kw)  # type: ignore[arg-type]
    line = next(ln for ln in block.splitlines() if ln.startswith("0 2 * * * "))
    return line.removeprefix("0 2 * * * ")


HOSTILE = "we ird 'q\" 100% $HOME `x` ünï"


def test_cron_line_survives_spaces_quotes_percent_dollar_and_unicode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / f"home {HOSTILE}"
    monkeypatch.setenv("FLOWSH_HOME", str(home))
    wf_dir = tmp_path / HOSTILE
    wf_dir.mkdir()
    flow = wf_dir / "night ly%.yaml"
    flow.write_text(FLOW)
    entry = entry_of(flow)
    assert "\n" not in entry
    _, stdin = cron_command(entry)
    assert stdin == ""  # every % escaped: cron cuts nothing off

    ok = cron(entry, tmp_path)
    assert (ok.returncode, ok.stdout, ok.stderr) == (0, "", "")
    assert (wf_dir / "ran.txt").read_text() == "a ran\nb ran\n"
    log = home / "cron" / "nightly.log"
    assert " succeeded ===" in log.read_text()

    (wf_dir / "fail").touch()
    bad = cron(entry, tmp_path, "2099-01-01T03:00:00Z")  # the next day's tick, say
    assert bad.returncode == 1 and "b broke" in bad.stdout and bad.stderr == ""


def test_a_killed_run_is_resumed_by_the_next_tick_silently(
    tmp_path: Path, home: Path
) -> None:
    wf_dir = tmp_path / "wf"
    wf_dir.mkdir()
    flow = wf_dir / "k.yaml"
    flow.write_text(
        "name: killme\nschedule: \"0 2 * * *\"\nsteps:\n"
        # The first attempt hangs until stopped; the next one goes straight through.
        "  - {name: a, run: 'echo a >> ran.txt; if [ ! -e once ]; then echo $$ > once; "
        "while :; do sleep 0.05; done; fi; echo a-done >> ran.txt'}\n"
        "  - {name: b, run: 'echo b >> ran.txt'}\n"
    )
    command, _ = cron_command(entry_of(flow))
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    first = subprocess.Popen(["/bin/sh", "-c", command], cwd=tmp_path, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    deadline = time.monotonic() + 60
    once = wf_dir / "once"
    while not (once.exists() and once.read_text().endswith("\n")):
        assert time.monotonic() < deadline and first.poll() is None
        time.sleep(0.05)
    # kill -9 flowsh itself (not its step): the crash cron never hears about.
    session = subprocess.run(["pgrep", "-s", str(first.pid)], capture_output=True, text=True,
                             check=False).stdout.split()
    runner = [int(p) for p in session
              if b"flowsh" in (cmd := Path(f"/proc/{p}/cmdline").read_bytes())
              and b"\0run\0" in cmd]
    assert runner, session
    for pid in runner:
        os.kill(pid, signal.SIGKILL)
    first.wait(60)
    orphan = int(once.read_text())
    try:
        assert alive(orphan)  # the step outlived its flowsh
        nxt = cron(entry_of(flow), tmp_path)
    finally:
        if alive(orphan):  # never leave the endless step behind
            os.kill(orphan, signal.SIGKILL)
    # Silent (chronic: it succeeded), though it had to stop the crashed run's step; that
    # warning is kept in the log.
    assert (nxt.returncode, nxt.stdout, nxt.stderr) == (0, "", "")
    log = (home / "cron" / "killme.log").read_text()
    assert log.count(" succeeded ===") == 1 and "b: succeeded" in log
    assert "was still running" in log
    assert wait_dead(orphan)
    assert (wf_dir / "ran.txt").read_text().split() == ["a", "a", "a-done", "b"]


def test_warnings_join_the_transcript_not_crons_mail(tmp_path: Path, home: Path) -> None:
    flow = tmp_path / "nightly.yaml"
    flow.write_text(FLOW)
    (tmp_path / "fail").touch()
    log = tmp_path / "n.log"
    first = run_cli("run", str(flow), "--quiet-on-success", "--log", str(log), cwd=tmp_path)
    assert first.returncode == 1
    (tmp_path / "fail").unlink()
    flow.write_text(FLOW.replace('echo "out of a"', 'echo "out of a, edited"'))
    again = run_cli("run", str(flow), "--resume", "--quiet-on-success", "--log", str(log),
                    cwd=tmp_path)
    # The resume warns that the file changed; on a success that is the log's, not a mail.
    assert (again.returncode, again.stdout, again.stderr) == (0, "", "")
    tail = log.read_text().rsplit("=== ", 1)[1]
    assert "changed since run" in tail and "b: succeeded" in tail
    # Without --quiet-on-success it is on screen too, as before.
    (tmp_path / "fail").touch()
    assert run_cli("run", str(flow), cwd=tmp_path).returncode == 1
    (tmp_path / "fail").unlink()
    flow.write_text(FLOW)
    loud = run_cli("run", str(flow), "--resume", "--log", str(log), cwd=tmp_path)
    assert loud.returncode == 0 and "changed since run" in loud.stderr


def test_a_symlink_at_the_log_path_is_refused_before_the_run(tmp_path: Path) -> None:
    flow = tmp_path / "nightly.yaml"
    flow.write_text(FLOW)
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    link = tmp_path / "n.log"
    link.symlink_to(victim)
    r = run_cli("run", str(flow), "--quiet-on-success", "--log", str(link), cwd=tmp_path)
    assert r.returncode == 3
    assert r.stderr.strip().splitlines() == [
        f"flowsh: error: --log {link}: is a symbolic link; give the file itself"]
    assert victim.read_text() == "precious\n"
    assert not (tmp_path / "ran.txt").exists()  # refused before anything ran
    dangling = tmp_path / "d.log"
    dangling.symlink_to(tmp_path / "nothere")
    r = run_cli("run", str(flow), "--log", str(dangling), cwd=tmp_path)
    assert r.returncode == 3 and not (tmp_path / "nothere").exists()


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_full_disk_at_the_log_keeps_the_report_and_the_exit_code(tmp_path: Path) -> None:
    flow = tmp_path / "nightly.yaml"
    flow.write_text(FLOW)
    ok = run_cli("run", str(flow), "--quiet-on-success", "--log", "/dev/full", cwd=tmp_path)
    assert ok.returncode == 0 and ok.stdout == ""
    assert ok.stderr == "flowsh: warning: --log /dev/full: No space left on device\n"
    (tmp_path / "fail").touch()
    bad = run_cli("run", str(flow), "--quiet-on-success", "--log", "/dev/full", cwd=tmp_path)
    assert bad.returncode == 1  # the run's, not the log's
    assert "b broke" in bad.stdout and "b: failed" in bad.stdout  # chronic: still mailed
    assert "--log /dev/full: No space left on device" in bad.stderr


def test_the_transcript_spool_is_not_a_named_file(tmp_path: Path) -> None:
    """Step output (secrets' neighbours) spools to an unnamed temporary file: nothing is left
    behind in TMPDIR by a kill -9, and nobody else can open it meanwhile."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    flow = tmp_path / "big.yaml"
    flow.write_text("name: big\nsteps:\n"
                    "  - {name: a, run: 'touch started; seq 1 200000; "
                    "while [ ! -e release ]; do sleep 0.05; done'}\n")
    proc = subprocess.Popen([sys.executable, "-m", "flowsh", "run", str(flow),
                             "--quiet-on-success"], cwd=tmp_path,
                            env={**os.environ, "TMPDIR": str(tmp)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "started").exists():
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        assert list(tmp.iterdir()) == []
    finally:
        proc.kill()
        proc.wait(60)
        (tmp_path / "release").touch()
    assert list(tmp.iterdir()) == []


def test_exported_script_line_keeps_its_log_private(tmp_path: Path, home: Path) -> None:
    """The exported-script cron line appends with the shell's `>>`, under cron's umask (022):
    the log of step output was world-readable. `flowsh run --log` makes it 0600."""
    flow = tmp_path / "nightly.yaml"
    flow.write_text(FLOW)
    script = tmp_path / "nightly.sh"
    assert run_cli("export", str(flow), "--bash", "-o", str(script)).returncode == 0
    entry = entry_of(flow, script=str(script))
    command, _ = cron_command(entry)
    ok = subprocess.run(["/bin/sh", "-c", f"umask 022; {command}"], cwd=tmp_path,
                        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
                        capture_output=True, text=True, timeout=120, check=False)
    assert (ok.returncode, ok.stdout, ok.stderr) == (0, "", "")
    log = home / "cron" / "nightly.log"
    assert "ok      a" in log.read_text()
    assert log.stat().st_mode & 0o777 == 0o600
    assert log.parent.stat().st_mode & 0o077 == 0
    # The steps themselves still run under cron's umask: what they create is as before.
    assert (tmp_path / "ran.txt").stat().st_mode & 0o777 == 0o644


def _waiting_for_flock(path: Path) -> bool:
    """Whether some process is blocked on a flock of `path` (/proc/locks '->' lines)."""
    st = path.stat()
    dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if "->" in fields and dev in fields:
            return True
    return False


@pytest.mark.skipif(not Path("/proc/locks").exists(), reason="needs /proc/locks")
def test_log_appends_take_turns(tmp_path: Path) -> None:
    """Two runs appending to one --log at once: each header and transcript in one piece."""
    import fcntl

    flow = tmp_path / "nightly.yaml"
    flow.write_text(FLOW)
    log = tmp_path / "shared.log"
    log.write_text("")
    with open(log, "ab") as holder:
        fcntl.flock(holder.fileno(), fcntl.LOCK_EX)  # another run, mid-append
        proc = subprocess.Popen([sys.executable, "-m", "flowsh", "run", str(flow),
                                 "--quiet-on-success", "--log", str(log)], cwd=tmp_path,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 60
            while not _waiting_for_flock(log):
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.05)
            holder.write(b"=== the other run ===\nits whole transcript\n")
            holder.flush()
        finally:
            fcntl.flock(holder.fileno(), fcntl.LOCK_UN)
    out, err = proc.communicate(timeout=120)
    assert (proc.returncode, out) == (0, b""), err
    text = log.read_text()
    assert text.startswith("=== the other run ===\nits whole transcript\n=== ")
    assert text.count("===") == 4


def _can_mount_tmpfs(where: Path) -> bool:
    probe = subprocess.run(["unshare", "-rm", "sh", "-c",
                            f"mount -t tmpfs -o size=1m tmpfs '{where}'"],
                           capture_output=True, check=False)
    return probe.returncode == 0


def test_a_full_tmpdir_does_not_stop_the_run(tmp_path: Path) -> None:
    """The transcript spools to TMPDIR; a small tmpfs there (Debian's /tmp) filled up and
    the write error killed the run mid-step ('crashed', exit 1, the transcript lost)."""
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    if shutil.which("unshare") is None or not _can_mount_tmpfs(tiny):
        pytest.skip("cannot mount a tmpfs in a user namespace here")
    flow = tmp_path / "mid.yaml"
    flow.write_text("name: mid\nsteps:\n"
                    "  - {name: a, run: 'seq 1 500000; echo a-done >> done.txt'}\n"
                    "  - {name: b, run: 'echo b-done >> done.txt; echo b broke; exit 4'}\n")
    log = tmp_path / "mid.log"
    inner = (f"mount -t tmpfs -o size=1m tmpfs {shlex.quote(str(tiny))} && "
             f"TMPDIR={shlex.quote(str(tiny))} exec {shlex.quote(sys.executable)} -m flowsh "
             f"run {shlex.quote(str(flow))} --quiet-on-success --log {shlex.quote(str(log))}")
    r = subprocess.run(["unshare", "-rm", "sh", "-c", inner], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 1, r.stderr  # b's failure, not the spool's
    assert r.stderr == ""
    assert (tmp_path / "done.txt").read_text() == "a-done\nb-done\n"
    *_, before, note = r.stdout.splitlines()
    assert before.isdigit()  # the transcript as far as it was kept, then why it stops
    assert note.startswith("flowsh: warning: the transcript stops here: cannot keep it in "
                           f"{tiny} (No space left on device)")
    assert log.read_text().endswith(note + "\n")


def test_a_line_break_in_a_path_is_refused_not_written_into_the_crontab(
    tmp_path: Path,
) -> None:
    wf_dir = tmp_path / "nl\ndir"
    wf_dir.mkdir()
    flow = wf_dir / "nightly.yaml"
    flow.write_text(FLOW)
    r = run_cli("export", str(flow), "--crontab")
    assert r.returncode == 2 and r.stdout == ""
    [line] = r.stderr.splitlines()
    assert line.endswith("a path with a line break cannot go in a crontab line; "
                         "move or rename it")


def test_secrets_are_masked_in_the_mailed_transcript_and_the_log(tmp_path: Path) -> None:
    flow = tmp_path / "sec.yaml"
    flow.write_text("name: sec\nparams: {DB_PASSWORD: hunter2-s3cret}\nsteps:\n"
                    "  - {name: a, run: 'echo \"pw $DB_PASSWORD\"; "
                    "echo \"err $DB_PASSWORD\" >&2; exit 4'}\n")
    log = tmp_path / "sec.log"
    r = run_cli("run", str(flow), "--quiet-on-success", "--log", str(log), cwd=tmp_path)
    assert r.returncode == 1
    assert "pw ***" in r.stdout and "err ***" in r.stdout
    assert "hunter2" not in r.stdout + r.stderr + log.read_text()


def test_json_with_log_or_quiet_on_success_is_refused(tmp_path: Path) -> None:
    """--json with --log left the log empty (and --quiet-on-success printed the events on
    a success): a refusal, before anything runs."""
    flow = tmp_path / "nightly.yaml"
    flow.write_text(FLOW)
    for extra in (["--log", str(tmp_path / "j.log")], ["--quiet-on-success"]):
        r = run_cli("run", str(flow), "--json", *extra, cwd=tmp_path)
        assert r.returncode == 2 and r.stdout == ""
        assert r.stderr == ("flowsh: error: --json does not combine with --log or "
                            "--quiet-on-success\n")
    assert not (tmp_path / "ran.txt").exists() and not (tmp_path / "j.log").exists()


def test_a_fifo_at_the_log_path_is_refused_not_waited_on(tmp_path: Path) -> None:
    flow = tmp_path / "nightly.yaml"
    flow.write_text(FLOW)
    fifo = tmp_path / "n.log"
    os.mkfifo(fifo)
    r = run_cli("run", str(flow), "--quiet-on-success", "--log", str(fifo), cwd=tmp_path,
                timeout=60)
    assert r.returncode == 3
    assert r.stderr == f"flowsh: error: --log {fifo}: is a pipe; give a regular file\n"
    assert not (tmp_path / "ran.txt").exists()


def test_a_scheduled_resume_after_a_renamed_step_starts_afresh_and_logs_it(
        tmp_path: Path) -> None:
    """rt18 #2: after a failed tick, the admin renamed the failing step; every later tick
    refused to resume (exit 2) forever, nothing reached --log, and the hint's `--force`
    does not exist on `flowsh run`."""
    flow = tmp_path / "j.yaml"
    flow.write_text("schedule: '0 2 * * *'\nsteps:\n  - {name: fetch, run: echo fetch}\n"
                    "  - {name: proc, run: 'echo proc; exit 1'}\n"
                    "  - {name: ship, run: 'echo shipped >> ran.txt'}\n")
    entry = entry_of(flow)
    home = tmp_path / "home"
    home.mkdir()
    assert cron(entry, home).returncode == 1
    flow.write_text(flow.read_text().replace("name: proc, run: 'echo proc; exit 1'",
                                             "name: process, run: 'echo proc'"))
    tick = cron(entry, home)
    assert tick.returncode == 0, tick.stdout + tick.stderr
    assert (tmp_path / "ran.txt").read_text() == "shipped\n"
    log = Path(os.environ["FLOWSH_HOME"]) / "cron" / f"{load_workflow(flow).identity}.log"
    text = log.read_text()
    assert text.count("\n=== ") + text.startswith("=== ") == 2  # both ticks
    assert "step(s) proc no longer in" in text and "starting a new run" in text
    # By hand, --resume still refuses, with a hint whose commands exist.
    r = run_cli("run", str(flow), "--resume", cwd=tmp_path)
    assert r.returncode == 0  # the latest run succeeded: nothing to resume, a fresh run


def test_a_refusal_before_the_run_is_in_the_log(tmp_path: Path) -> None:
    """rt18 #2/#14: a tick that exits 2 before running left --log untouched."""
    flow = tmp_path / "w.yaml"
    flow.write_text("steps:\n  - {name: s, run: 'echo $day'}\nparams:\n  day:\n")
    log = tmp_path / "cron" / "w.log"
    r = run_cli("run", str(flow), "--resume", "--quiet-on-success", "--log", str(log))
    assert r.returncode == 2
    [line] = log.read_text().splitlines()
    assert line.startswith("=== ") and f"{flow}: not run: " in line and "day" in line


def test_the_resume_refusal_names_commands_that_exist(tmp_path: Path) -> None:
    flow = tmp_path / "j.yaml"
    flow.write_text("steps:\n  - {name: a, run: 'exit 1'}\n")
    assert run_cli("run", str(flow), cwd=tmp_path).returncode == 1
    flow.write_text("steps:\n  - {name: b, run: 'true'}\n")
    r = run_cli("run", str(flow), "--resume", cwd=tmp_path)
    assert r.returncode == 2 and "--force to" not in r.stderr
    run_id = r.stderr.split("cannot resume ")[1].split(":")[0]
    assert f"`flowsh resume {run_id} --force`" in r.stderr
    assert run_cli("resume", run_id, "--force", cwd=tmp_path).returncode == 0
