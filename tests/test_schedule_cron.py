"""Cron expressions in workflow files: validated with croniter, errors at FILE:LINE:COL,
next fire times in words for `flowsh validate`."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from flowsh.cron import describe_schedule, next_times, parse
from flowsh.errors import WorkflowError
from flowsh.loader import load_workflow


@pytest.mark.parametrize(
    ("text", "expr", "tz"),
    [
        ("0 2 * * *", "0 2 * * *", None),
        ("  */5  *  * * 1-5 ", "*/5 * * * 1-5", None),
        ("@daily", "0 0 * * *", None),
        ("CRON_TZ=America/Sao_Paulo 0 2 * * *", "0 2 * * *", "America/Sao_Paulo"),
        ("TZ=UTC @hourly", "0 * * * *", "UTC"),
        ("* * * * * */10", "* * * * * */10", None),
    ],
)
def test_parse(text: str, expr: str, tz: str | None) -> None:
    s = parse(text)
    assert (s.expr, s.tz) == (expr, tz)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("61 * * * *", "out of range"),
        ("0 2 * *", "has 4 fields"),
        ("@sometimes", "unknown cron nickname"),
        ("CRON_TZ=Mars/Olympus 0 2 * * *", "unknown time zone"),
        ("", "empty"),
    ],
)
def test_parse_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse(text)


def test_time_zone_is_honoured() -> None:
    base = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
    [t] = next_times(parse("CRON_TZ=America/Sao_Paulo 0 2 * * *"), base, 1)
    assert t.isoformat() == "2026-03-02T02:00:00-03:00"


def test_bad_schedule_points_at_the_item(write_flow) -> None:  # type: ignore[no-untyped-def]
    path = write_flow("""
        name: bad
        schedule:
          - "0 2 * * *"
          - "0 25 * * *"
        steps:
          - {name: a, run: 'true'}
    """)
    with pytest.raises(WorkflowError) as err:
        load_workflow(path)
    assert str(err.value).startswith(f"{path}:4:5: ")
    assert "invalid cron expression '0 25 * * *'" in str(err.value)


def test_describe_schedule_in_words(write_flow) -> None:  # type: ignore[no-untyped-def]
    wf = load_workflow(write_flow("""
        schedule: ["CRON_TZ=UTC 30 2 * * 1", "CRON_TZ=UTC */10 * * * * */30"]
        steps: [{name: a, run: 'true'}]
    """))
    now = datetime(2026, 11, 26, 7, 0, 5, tzinfo=timezone.utc)  # a Thursday
    lines = describe_schedule(wf, now)
    assert lines[0] == ("schedule 'CRON_TZ=UTC 30 2 * * 1', next: "
                        "Mon 30 Nov 2026 02:30 UTC (in 3 days 19 hours); "
                        "Mon 07 Dec 2026 02:30 UTC (in 10 days 19 hours); "
                        "Mon 14 Dec 2026 02:30 UTC (in 17 days 19 hours)")
    assert lines[1].endswith("Thu 26 Nov 2026 07:00:30 UTC (in 25 seconds); "
                             "Thu 26 Nov 2026 07:10:00 UTC (in 9 minutes); "
                             "Thu 26 Nov 2026 07:10:30 UTC (in 10 minutes)")


def test_validate_shows_next_fire_times(write_flow, cli) -> None:  # type: ignore[no-untyped-def]
    path: Path = write_flow("""
        schedule: "0 2 * * *"
        steps: [{name: a, run: 'true'}]
    """)
    r = cli("validate", str(path))
    assert r.returncode == 0, r.stderr
    assert "schedule '0 2 * * *', next: " in r.stdout and r.stdout.count(" 02:00 ") == 3
