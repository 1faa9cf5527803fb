"""flowsh.builtin.sched_crontab: the marked block in a crontab, through a fake `crontab`
command (FLOWSH_CRONTAB) that keeps the table in a tmp file: never the real crontab."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from flowsh import plugins
from flowsh.builtin.sched_crontab import (
    CrontabScheduler,
    check_name,
    read_table,
    resolve_name,
    split_blocks,
    write_table,
)
from flowsh.errors import NotFoundError, StateError, UsageError
from flowsh.loader import load_workflow

FAKE = """#!/bin/sh
case "$1" in
  -l) [ -f "$SPOOL" ] || { echo "no crontab for tester" >&2; exit 1; }; cat "$SPOOL" ;;
  -) cat > "$SPOOL" ;;
  *) exit 2 ;;
esac
"""

FLOW = "name: nightly\nschedule: '0 2 * * *'\nsteps:\n  - {name: a, run: 'true'}\n"


@pytest.fixture
def spool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    fake = tmp_path / "fake-crontab"
    fake.write_text(FAKE)
    fake.chmod(0o755)
    spool = tmp_path / "spool"
    monkeypatch.setenv("SPOOL", str(spool))
    monkeypatch.setenv("FLOWSH_CRONTAB", str(fake))
    return spool


def test_registered() -> None:
    assert plugins.registry("schedulers")["crontab"] is CrontabScheduler


def test_no_crontab_is_empty_and_errors_refuse(spool: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    assert read_table() == ""
    write_table("MAILTO=x\n")
    assert read_table() == "MAILTO=x\n"
    bad = tmp_path / "bad"
    bad.write_text("#!/bin/sh\necho 'permission denied' >&2\nexit 1\n")
    bad.chmod(0o755)
    monkeypatch.setenv("FLOWSH_CRONTAB", str(bad))
    with pytest.raises(StateError, match=r"permission denied.*not changing it"):
        read_table()
    monkeypatch.setenv("FLOWSH_CRONTAB", str(tmp_path / "nope"))
    with pytest.raises(StateError, match="command not found"):
        read_table()


def test_add_list_remove_keeps_the_users_lines(spool: Path, write_flow: Callable[..., Path]) -> None:
    spool.write_text("MAILTO=me@example.com\nCRON_TZ=America/Sao_Paulo\n5 * * * * /usr/bin/mine")
    wf = load_workflow(write_flow(FLOW))
    s = CrontabScheduler()
    assert s.add(wf) is True
    assert s.add(wf) is False  # already there as is
    text = spool.read_text()
    assert text.startswith("MAILTO=me@example.com\nCRON_TZ=America/Sao_Paulo\n5 * * * * /usr/bin/mine\n")
    (entry,) = s.list()
    assert entry.name == "nightly" and entry.exprs == ["0 2 * * *"] and entry.source == wf.path
    assert s.add(wf, ["CRON_TZ=UTC 30 3 * * *"]) is True
    text = spool.read_text()
    assert "CRON_TZ=UTC\n30 3 * * * " in text
    assert "\nCRON_TZ=America/Sao_Paulo\n# END flowsh:nightly" in text  # the user's zone restored
    assert s.list()[0].exprs == ["CRON_TZ=UTC 30 3 * * *"]
    s.remove("nightly")
    assert spool.read_text() == "MAILTO=me@example.com\nCRON_TZ=America/Sao_Paulo\n5 * * * * /usr/bin/mine\n"
    with pytest.raises(NotFoundError):
        s.remove("nightly")


def test_split_blocks_needs_the_end_line() -> None:
    text = "# BEGIN flowsh:a (x)\n1 * * * * a\n# END flowsh:a\n# BEGIN flowsh:b (y)\nno end\n"
    lines, blocks = split_blocks(text)
    assert blocks == {"a": (0, 2)} and len(lines) == 5


def test_resolve_name(spool: Path, write_flow: Callable[..., Path], tmp_path: Path) -> None:
    unnamed = load_workflow(write_flow("schedule: '0 2 * * *'\nsteps:\n  - {name: a, run: 'true'}\n",
                                       name="backup.yaml"))
    s = CrontabScheduler()
    s.add(unnamed)
    entries = s.list()
    key = entries[0].name
    assert key.startswith("backup-") and resolve_name("backup", entries, "x") == key
    assert resolve_name(str(tmp_path / "backup.yaml"), entries, "x") == key
    with pytest.raises(NotFoundError):
        resolve_name("other", entries, "crontab entry")
    with pytest.raises(UsageError, match="is not a workflow name"):
        check_name("a b")
