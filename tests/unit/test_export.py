"""flowsh.export: the exported script, its refusals, systemd words and calendars.

(The script's behaviour, step for step against `flowsh run`, is tests/test_export_*.py and
tests/conformance; here: this module's own functions.)"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import pytest

from flowsh.cron import next_times, parse
from flowsh.errors import UsageError, WorkflowError
from flowsh.export import (
    base_dir,
    check_exportable,
    on_calendar,
    render_bash,
    script_identity,
    seconds,
    step_dir,
    systemd_quote,
)
from flowsh.loader import load_workflow


@pytest.mark.parametrize(("value", "text"), [
    (None, "0"), (0, "0"), (90, "90"), (0.2, "0.2"), (0.0001, "0.001"), (1.23456, "1.235")])
def test_seconds(value: float | None, text: str) -> None:
    assert seconds(value) == text


def test_dirs(write_flow: Callable[..., Path], tmp_path: Path) -> None:
    wf = load_workflow(write_flow("name: w\nworkdir: sub\nsteps:\n  - {name: a, run: x, workdir: d}\n"))
    assert base_dir(wf) == tmp_path / "sub"
    assert step_dir(wf, wf.step("a")) == tmp_path / "sub" / "d"


def test_script_identity(write_flow: Callable[..., Path]) -> None:
    a = load_workflow(write_flow("name: w\nsteps:\n  - {name: a, run: x}\n"))
    b = load_workflow(write_flow("name: w\nsteps:\n  - {name: a, run: x}\n", name="b.yaml"))
    assert script_identity(a) == script_identity(b) and len(script_identity(a)) == 64
    assert script_identity(a, "lib v2") != script_identity(a)


def test_render_bash_is_valid_bash_that_runs(write_flow: Callable[..., Path], tmp_path: Path) -> None:
    wf = load_workflow(write_flow("name: w\nsteps:\n  - {name: a, run: 'echo A-RAN > a.txt'}\n"
                                  "  - {name: b, run: 'echo B-RAN > b.txt'}\n"))
    script = tmp_path / "w.sh"
    script.write_text(render_bash(wf))
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True, check=False).returncode == 0
    res = subprocess.run(["bash", str(script)], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120, check=False,
                         env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path)})
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "a.txt").read_text() == "A-RAN\n" and (tmp_path / "b.txt").read_text() == "B-RAN\n"


def test_refusals(write_flow: Callable[..., Path]) -> None:
    # RANDOM never reaches a step on any runtime (PARAM-6): refused at load, before export
    with pytest.raises(WorkflowError, match="RANDOM' cannot reach a step") as exc:
        load_workflow(write_flow("name: w\nenv:\n  RANDOM: x\nsteps:\n  - {name: a, run: x}\n",
                                 name="r.yaml"))
    assert exc.value.line == 3
    wf = load_workflow(write_flow("name: w\nenv:\n  SECONDS: x\nsteps:\n  - {name: a, run: x}\n"))
    with pytest.raises(WorkflowError, match="cannot hand SECONDS to a step") as exc:
        check_exportable(wf)
    assert exc.value.line == 3
    other = load_workflow(write_flow("name: w\nexecutor: celery\nsteps:\n  - {name: a, run: x}\n",
                                     name="c.yaml"))
    with pytest.raises(UsageError, match="key 'executor'"):
        check_exportable(other)


@pytest.mark.parametrize(("value", "word"), [
    ("/usr/bin/flowsh", "/usr/bin/flowsh"), ("100%", '"100%%"'), ("$HOME", '"$$HOME"'),
    ('a "b"', '"a \\"b\\""'), ("", '""')])
def test_systemd_quote(value: str, word: str) -> None:
    assert systemd_quote(value) == word


@pytest.mark.parametrize(("cron", "values"), [
    ("0 2 * * *", ["*-*-* 02:00:00"]),
    ("*/30 9-10 * * 1-5", ["Mon,Tue,Wed,Thu,Fri *-*-* 09,10:00,30:00"]),
    ("CRON_TZ=Europe/Lisbon 15 3 1 * *", ["*-*-01 03:15:00 Europe/Lisbon"]),
    ("0 0 13 * 5", ["*-*-13 00:00:00", "Fri *-*-* 00:00:00"]),
])
def test_on_calendar_values(cron: str, values: list[str]) -> None:
    assert on_calendar(cron) == values


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
@pytest.mark.parametrize("cron", ["TZ=UTC 0 2 * * *", "TZ=UTC */20 9-10 * * 1-5",
                                  "TZ=UTC 0 0 13 * 5", "TZ=UTC 5 4 * 2 0", "TZ=UTC 0 12 * * * 30"])
def test_on_calendar_fires_when_cron_does(cron: str) -> None:
    """systemd's own reading of each value: the union of their next times is cron's."""
    start = datetime.now(timezone.utc).replace(microsecond=0)
    want = next_times(parse(cron), start, 4)
    got: set[datetime] = set()
    for value in on_calendar(cron):
        res = subprocess.run(["systemd-analyze", "calendar", "--iterations=4", value],
                             capture_output=True, text=True, check=True, timeout=60,
                             env={"TZ": "UTC", "PATH": "/usr/bin:/bin"})
        for m in re.finditer(r"(?:Next elapse|Iter\. #\d+): \w+ (\S+ \S+) UTC", res.stdout):
            got.add(datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc))
    assert sorted(got)[:4] == want


def test_on_calendar_refusals() -> None:
    with pytest.raises(UsageError, match="fields"):
        on_calendar("0 2 * *")


def test_on_calendar_refuses_nth_weekday() -> None:
    with pytest.raises(UsageError, match="no systemd equivalent"):
        on_calendar("0 0 * * 1#2")


def test_on_calendar_refuses_nearest_weekday() -> None:
    with pytest.raises(UsageError, match="no systemd equivalent"):
        on_calendar("0 0 1W * *")


def test_on_calendar_refuses_last_day() -> None:
    with pytest.raises(UsageError, match="no systemd equivalent"):
        on_calendar("0 12 L * *")
