"""`flowsh schedule` with the crontab scheduler, against the real `crontab` binary.

The suite must never touch the crontab of the user running it. flowsh takes its crontab
command from FLOWSH_CRONTAB; as root we point it at ``crontab -u <a dedicated system user>``
created for the session (the real binary, the real spool, someone else's table). Without
root, -u is not allowed, so we fall back to a small wrapper that keeps the table in a tmp
file and implements ``-l`` and ``-`` the way crontab does (including "no crontab for").
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowsh.builtin.sched_crontab import CrontabScheduler, read_table, write_table
from flowsh.errors import NotFoundError, StateError
from flowsh.loader import load_workflow

FAKE_CRONTAB = """#!/bin/sh
# crontab -l / crontab - on a table kept in $FAKE_SPOOL
case "$1" in
  -l) [ -f "$FAKE_SPOOL" ] || { echo "no crontab for $(id -un)" >&2; exit 1; }
      cat "$FAKE_SPOOL" ;;
  -) cat > "$FAKE_SPOOL" ;;
  *) echo "usage" >&2; exit 1 ;;
esac
"""


@pytest.fixture(scope="session")
def cron_user() -> Iterator[str | None]:
    if os.geteuid() != 0 or not shutil.which("useradd") or not shutil.which("crontab"):
        yield None
        return
    name = f"flowsh-t{secrets.token_hex(3)}"
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                    name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["crontab", "-u", name, "-r"], capture_output=True, check=False)
        subprocess.run(["userdel", name], check=True)


@pytest.fixture
def crontab(cron_user: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """FLOWSH_CRONTAB for this test, with an empty table to start from."""
    if cron_user is not None:
        subprocess.run(["crontab", "-u", cron_user, "-r"], capture_output=True, check=False)
        cmd = f"crontab -u {cron_user}"
    else:
        fake = tmp_path / "fake-crontab"
        fake.write_text(FAKE_CRONTAB)
        fake.chmod(0o755)
        monkeypatch.setenv("FAKE_SPOOL", str(tmp_path / "spool"))
        cmd = str(fake)
    monkeypatch.setenv("FLOWSH_CRONTAB", cmd)
    return cmd


@pytest.fixture
def my_crontab() -> Iterator[None]:
    """The invoking user's own table is byte-for-byte the same after the test."""
    def snap() -> tuple[int, str]:
        if not shutil.which("crontab"):
            return (0, "")
        r = subprocess.run(["crontab", "-l"], capture_output=True, text=True, check=False)
        return r.returncode, r.stdout
    before = snap()
    yield
    assert snap() == before


FLOW = """\
name: nightly
schedule: "0 2 * * *"
steps:
  - {name: a, run: 'echo ran > ran.txt'}
"""

EXISTING = (
    "# my own crontab, hands off\n"
    "MAILTO=me@example.com\n"
    "CRON_TZ=Europe/Lisbon\n"
    "\n"
    "*/5 * * * * /usr/bin/backup --pct=50\\% >/dev/null 2>&1\n"
    "# BEGIN something-else\n"
    "@reboot echo hi   # trailing comment, two spaces\n"
)


@pytest.fixture
def flow(tmp_path: Path) -> Path:
    p = tmp_path / "nightly.yaml"
    p.write_text(FLOW)
    return p


def test_add_list_remove_keeps_every_other_byte(crontab: str, flow: Path, my_crontab: None) -> None:
    write_table(EXISTING)
    sched = CrontabScheduler()
    wf = load_workflow(flow)
    assert sched.add(wf) is True
    table = read_table()
    assert table.startswith(EXISTING)
    block = table[len(EXISTING):]
    assert block.startswith("# BEGIN flowsh:nightly ")
    assert block.endswith("# END flowsh:nightly\n")
    line = next(ln for ln in block.splitlines() if ln.startswith("0 2 * * * "))
    assert f"cd {flow.parent} && " in line
    assert " PATH=" in line and f"FLOWSH_HOME={os.environ['FLOWSH_HOME']}" in line
    # cron's conventions (issue 18): silent on success, the log kept by flowsh, resumed.
    assert line.endswith(f" run {flow} --resume --scheduled --quiet-on-success --log "
                         f"{os.environ['FLOWSH_HOME']}/cron/nightly.log")

    # Idempotent: adding again writes nothing and keeps one entry.
    assert sched.add(wf) is False
    assert read_table() == table
    # A new expression replaces the block in place.
    assert sched.add(wf, ["30 4 * * 1-5", "CRON_TZ=America/Sao_Paulo 0 12 * * *"]) is True
    table2 = read_table()
    assert table2.count("# BEGIN flowsh:nightly") == 1 and table2.startswith(EXISTING)
    # Our CRON_TZ is set for our line only; the user's (Europe/Lisbon) comes back after it.
    assert "CRON_TZ=America/Sao_Paulo\n0 12 * * * " in table2
    assert "CRON_TZ=Europe/Lisbon\n# END flowsh:nightly" in table2
    [entry] = sched.list()
    assert entry.name == "nightly" and entry.source == str(flow)
    assert entry.exprs == ["30 4 * * 1-5", "CRON_TZ=America/Sao_Paulo 0 12 * * *"]

    sched.remove("nightly")
    assert read_table() == EXISTING
    with pytest.raises(NotFoundError):
        sched.remove("nightly")


def test_other_blocks_stay_when_one_is_replaced(crontab: str, tmp_path: Path) -> None:
    sched = CrontabScheduler()
    for name in ("one", "two", "three"):
        p = tmp_path / f"{name}.yaml"
        p.write_text(FLOW.replace("nightly", name))
        sched.add(load_workflow(p))
    before = read_table()
    two = tmp_path / "two.yaml"
    two.write_text(FLOW.replace("nightly", "two").replace("0 2", "15 3"))
    sched.add(load_workflow(two))
    after = read_table()
    assert after.replace("15 3 * * *", "0 2 * * *") == before
    assert [e.name for e in sched.list()] == ["one", "two", "three"]


def test_refuses_to_write_when_the_table_cannot_be_read(tmp_path: Path, flow: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    wrote = tmp_path / "wrote"
    broken = tmp_path / "broken-crontab"
    broken.write_text(
        '#!/bin/sh\n[ "$1" = -l ] && { echo "crontab: cannot open spool: Permission denied" >&2;'
        f' exit 1; }}\ntouch {wrote}\n'
    )
    broken.chmod(0o755)
    monkeypatch.setenv("FLOWSH_CRONTAB", str(broken))
    with pytest.raises(StateError, match="cannot read the current crontab"):
        CrontabScheduler().add(load_workflow(flow))
    assert not wrote.exists()
    if os.geteuid() == 0 and shutil.which("crontab"):
        # The real binary, failing for another reason than "no crontab".
        monkeypatch.setenv("FLOWSH_CRONTAB", "crontab -u flowsh-no-such-user")
        with pytest.raises(StateError, match="unknown"):
            CrontabScheduler().add(load_workflow(flow))


def test_cli_schedule_commands(crontab: str, flow: Path, cli, my_crontab: None) -> None:  # type: ignore[no-untyped-def]
    env = {"FLOWSH_CRONTAB": crontab, "FAKE_SPOOL": os.environ.get("FAKE_SPOOL", "")}
    r = cli("schedule", "add", str(flow), env=env)
    assert r.returncode == 0, r.stderr
    assert "nightly: scheduled (crontab)" in r.stdout
    r = cli("schedule", "add", str(flow), env=env)
    assert "already scheduled, unchanged" in r.stdout
    r = cli("schedule", "list", "--json", env=env)
    assert '"name": "nightly"' in r.stdout
    r = cli("schedule", "add", str(flow), "--cron", "61 * * * *", env=env)
    assert r.returncode == 2 and "out of range" in r.stderr
    r = cli("schedule", "remove", "nightly", env=env)
    assert r.returncode == 0
    r = cli("schedule", "remove", "nightly", env=env)
    assert r.returncode == 4 and "no crontab entry" in r.stderr
    r = cli("schedule", "add", str(flow), "--scheduler", "nope", env=env)
    assert r.returncode == 2 and "unknown scheduler" in r.stderr


def test_the_crontab_line_runs_from_an_empty_environment(crontab: str, flow: Path,
                                                         tmp_path: Path) -> None:
    """What cron would do: /bin/sh -c COMMAND, cwd $HOME, almost no environment."""
    CrontabScheduler().add(load_workflow(flow))
    line = next(ln for ln in read_table().splitlines() if ln.startswith("0 2 * * * "))
    command = line.removeprefix("0 2 * * * ")
    subprocess.run(["/bin/sh", "-c", command], cwd=tmp_path, env={"HOME": str(tmp_path)},
                   check=True, timeout=120)
    assert (flow.parent / "ran.txt").read_text() == "ran\n"
    log = Path(os.environ["FLOWSH_HOME"]) / "cron" / "nightly.log"
    assert log.exists()


def test_export_crontab(flow: Path, tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    r = cli("export", str(flow), "--crontab")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("# BEGIN flowsh:nightly") and "0 2 * * * cd " in r.stdout
    script = tmp_path / "nightly.sh"
    assert cli("export", str(flow), "--bash", "-o", str(script)).returncode == 0
    r = cli("export", str(flow), "--crontab", "--script", str(script))
    assert f"flock -n -E 75 {os.environ['FLOWSH_HOME']}/exported/nightly/cron.lock {script}" \
        in r.stdout
    r = cli("export", str(flow), "--crontab", "--cron", "* * * * * */5")
    assert r.returncode == 2 and "no seconds field" in r.stderr
    (tmp_path / "none.yaml").write_text("steps: [{name: a, run: 'true'}]\n")
    r = cli("export", str(tmp_path / "none.yaml"), "--crontab")
    assert r.returncode == 2 and "no `schedule`" in r.stderr


@pytest.fixture
def fake_crontab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """FLOWSH_CRONTAB: the table in a tmp file, never a real crontab (nor cron's spool)."""
    fake = tmp_path / "fake-crontab"
    fake.write_text(FAKE_CRONTAB)
    fake.chmod(0o755)
    monkeypatch.setenv("FAKE_SPOOL", str(tmp_path / "spool"))
    monkeypatch.setenv("FLOWSH_CRONTAB", str(fake))
    return str(fake)


SAME_STEM = 'schedule: "0 {hour} * * *"\nsteps:\n  - {{name: s, run: "echo {app} >> ran.txt"}}\n'


def test_two_files_with_the_same_stem_keep_two_entries(fake_crontab: str, tmp_path: Path,
                                                       cli) -> None:  # type: ignore[no-untyped-def]
    """rt18 #1: app1/backup.yaml and app2/backup.yaml (no `name:`) were both `flowsh:backup`:
    the second add replaced the first file's block and its job silently stopped."""
    env = {"FLOWSH_CRONTAB": fake_crontab, "FAKE_SPOOL": os.environ.get("FAKE_SPOOL", "")}
    files = []
    for hour, app in ((1, "app1"), (2, "app2")):
        (tmp_path / app).mkdir()
        f = tmp_path / app / "backup.yaml"
        f.write_text(SAME_STEM.format(hour=hour, app=app))
        files.append(f)
    # Stems that are not plain names both fall back to `workflow`.
    for stem, hour in (("my job", 3), ("other job", 4)):
        f = tmp_path / f"{stem}.yaml"
        f.write_text(SAME_STEM.format(hour=hour, app=stem))
        files.append(f)
    idents = [load_workflow(f).identity for f in files]
    assert len(set(idents)) == 4
    for f, ident in zip(files, idents, strict=True):
        r = cli("schedule", "add", str(f), env=env)
        assert r.returncode == 0 and f"{ident}: scheduled (crontab)" in r.stdout, r.stderr
    entries = CrontabScheduler().list()
    assert [(e.name, e.source) for e in entries] == [
        (i, str(f)) for f, i in zip(files, idents, strict=True)]
    table = read_table()
    for ident in idents:
        assert f"# BEGIN flowsh:{ident} " in table
        assert f"remove with: flowsh schedule remove {ident})" in table
        assert f"/cron/{ident}.log" in table  # one cron log each
    # Every line runs its own file: both backups happen.
    for line in table.splitlines():
        if line.startswith(("0 1 ", "0 2 ")):
            subprocess.run(["/bin/sh", "-c", line[len("0 1 * * * "):]], cwd=tmp_path,
                           env={"HOME": str(tmp_path)}, check=True, timeout=120)
    assert [(tmp_path / a / "ran.txt").read_text() for a in ("app1", "app2")] == \
        ["app1\n", "app2\n"]

    r = cli("schedule", "list", env=env)
    assert [ln.split("\t")[0] for ln in r.stdout.splitlines()] == idents
    # `backup` alone names two entries: refused, both named, nothing removed.
    r = cli("schedule", "remove", "backup", env=env)
    assert r.returncode == 2 and idents[0] in r.stderr and idents[1] in r.stderr
    assert len(CrontabScheduler().list()) == 4
    # By the file, or by the name `list` shows.
    r = cli("schedule", "remove", str(files[0]), env=env)
    assert r.returncode == 0, r.stderr
    r = cli("schedule", "remove", idents[2], env=env)
    assert r.returncode == 0, r.stderr
    assert [e.name for e in CrontabScheduler().list()] == [idents[1], idents[3]]
    # Now `backup` is one entry: the bare name is enough.
    r = cli("schedule", "remove", "backup", env=env)
    assert r.returncode == 0, r.stderr
    assert [e.name for e in CrontabScheduler().list()] == [idents[3]]


def test_an_entry_written_under_the_bare_stem_is_replaced_not_doubled(
        fake_crontab: str, tmp_path: Path) -> None:
    """A block from a flowsh that keyed entries by the stem stays listable and removable,
    and adding the same file again replaces it (two blocks would run it twice)."""
    f = tmp_path / "backup.yaml"
    f.write_text(SAME_STEM.format(hour=1, app="x"))
    other = tmp_path / "elsewhere.yaml"
    old = (f"# BEGIN flowsh:backup (managed by flowsh from {f}; remove with: flowsh schedule "
           f"remove backup)\n0 1 * * * cd {tmp_path} && flowsh run {f}\n# END flowsh:backup\n")
    foreign = old.replace(str(f), str(other)).replace("flowsh:backup", "flowsh:elsewhere")
    write_table(EXISTING + old + foreign)
    sched = CrontabScheduler()
    assert [e.name for e in sched.list()] == ["backup", "elsewhere"]
    wf = load_workflow(f)
    assert sched.add(wf) is True
    table = read_table()
    assert "flowsh:backup " not in table and f"# BEGIN flowsh:{wf.identity} " in table
    assert table.startswith(EXISTING) and table.endswith(foreign)  # in place, the rest kept
    sched.remove("elsewhere")
    assert [e.name for e in sched.list()] == [wf.identity]


def test_a_required_param_is_refused(fake_crontab: str, tmp_path: Path,
                                     cli) -> None:  # type: ignore[no-untyped-def]
    """rt18 #14: every tick would exit 2 (`parameter day needs a value`) before running."""
    env = {"FLOWSH_CRONTAB": fake_crontab, "FAKE_SPOOL": os.environ.get("FAKE_SPOOL", ""),
           "FLOWSH_SYSTEMCTL": "true"}
    f = tmp_path / "w.yaml"
    f.write_text('schedule: "@daily"\nparams:\n  day:\n  n: 1\n'
                 'steps:\n  - {name: s, run: "echo $day"}\n')
    for args in (["schedule", "add", str(f)], ["export", str(f), "--crontab"],
                 ["schedule", "add", str(f), "--scheduler", "systemd"]):
        r = cli(*args, env=env)
        assert r.returncode == 2, (args, r.stderr)
        assert "parameter day has no default" in r.stderr and len(r.stderr.splitlines()) == 1
    assert read_table() == ""


@pytest.mark.parametrize("expr", ["0 0 * * 5#2", "0 0 L * *", "0 0 15W * *"])
def test_croniter_extensions_are_refused_in_a_crontab_line(
        fake_crontab: str, tmp_path: Path, expr: str,
        cli) -> None:  # type: ignore[no-untyped-def]
    """rt16b #3: cron's fields have no L, W or #; the line would never fire as meant (cron
    rejects it, or a `5#2` read loosely). Refused like `export --bash` and systemd do."""
    env = {"FLOWSH_CRONTAB": fake_crontab, "FAKE_SPOOL": os.environ.get("FAKE_SPOOL", "")}
    f = tmp_path / "w.yaml"
    f.write_text(f'schedule: ["0 1 * * *", "{expr}"]\nsteps:\n  - {{name: s, run: "true"}}\n')
    for args in (["schedule", "add", str(f)], ["export", str(f), "--crontab"]):
        r = cli(*args, env=env)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert "key 'schedule.1'" in r.stderr and expr in r.stderr, r.stderr
        assert len(r.stderr.splitlines()) == 1 and r.stdout == "", r.stderr
    r = cli("schedule", "add", str(flow_file(tmp_path)), "--cron", expr, env=env)
    assert r.returncode == 2 and "--cron" in r.stderr and expr in r.stderr, r.stderr
    assert read_table() == ""


def flow_file(tmp_path: Path) -> Path:
    p = tmp_path / "nightly.yaml"
    p.write_text(FLOW)
    return p


def test_the_line_carries_state_and_config(fake_crontab: str, tmp_path: Path,
                                           cli) -> None:  # type: ignore[no-untyped-def]
    """rt18 #15: FLOWSH_STATE / FLOWSH_CONFIG set when the line is written are on it, so a
    tick uses the same store (a mailed `flowsh resume ID` works) and the same channels."""
    cfg = tmp_path / "cfg" / "config.yaml"
    cfg.parent.mkdir()
    cfg.write_text("notify:\n  channels:\n    ops: {type: log}\n")
    f = tmp_path / "n.yaml"
    f.write_text('schedule: "@daily"\nnotify:\n  routes: {critical: [ops]}\n'
                 '  events: {run_failed: critical}\nsteps:\n  - {name: s, run: "false"}\n')
    # Relative, as typed in a shell: made absolute (cron starts in $HOME).
    env = {"FLOWSH_CRONTAB": fake_crontab, "FAKE_SPOOL": os.environ.get("FAKE_SPOOL", ""),
           "FLOWSH_STATE": "json://state", "FLOWSH_CONFIG": "cfg/config.yaml"}
    r = cli("schedule", "add", str(f), env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    line = next(ln for ln in read_table().splitlines() if ln.startswith("0 0 * * * "))
    assert f"FLOWSH_STATE=json://{tmp_path}/state " in line, read_table()
    assert f"FLOWSH_CONFIG={cfg} " in line
    home = tmp_path / "home"
    home.mkdir()
    tick = subprocess.run(["/bin/sh", "-c", line.removeprefix("0 0 * * * ")], cwd=home,
                          env={"HOME": str(home)}, capture_output=True, text=True, timeout=120)
    assert tick.returncode == 1, tick.stdout + tick.stderr  # ran and failed, not exit 2
    run_id = re.search(r"flowsh resume (\S+)", tick.stdout)
    assert run_id, tick.stdout
    # The pasted command, in the shell that has FLOWSH_STATE, finds the run.
    r = cli("status", run_id.group(1), env=env, cwd=tmp_path)
    assert r.returncode != 4 and run_id.group(1) in r.stdout, r.stdout + r.stderr
