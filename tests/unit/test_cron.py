"""flowsh.cron: parsing schedules, next fire times (time zones, DST), words, PATH."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from flowsh.cron import check, clean_path, describe_schedule, in_words, next_times, parse
from flowsh.loader import load_workflow

UTC = timezone.utc


def test_parse_forms() -> None:
    s = parse("CRON_TZ=Europe/Lisbon  0 2 * * *")
    assert (s.expr, s.tz, s.has_seconds) == ("0 2 * * *", "Europe/Lisbon", False)
    assert parse("TZ=UTC @daily").expr == "0 0 * * *"
    assert parse("@HOURLY").expr == "0 * * * *"
    assert parse("*/5 * * * * 30").has_seconds
    assert parse("0  2 *  * 1-5").expr == "0 2 * * 1-5"
    assert check("@weekly") == "@weekly"


@pytest.mark.parametrize(("text", "message"), [
    ("", "empty cron expression"),
    ("   ", "empty cron expression"),
    ("@fortnightly", "unknown cron nickname"),
    ("0 2 * *", "has 4 fields; expected 5"),
    ("0 2 * * * * *", "has 7 fields"),
    ("61 2 * * *", "invalid cron expression"),
    ("CRON_TZ=Mars/Olympus 0 2 * * *", "unknown time zone 'Mars/Olympus'"),
    ("0 0 30 2 *", "never fires"),  # a slot or the next fire time would be a traceback
])
def test_parse_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse(text)


def test_next_times_utc() -> None:
    start = datetime(2026, 12, 5, 4, 10, tzinfo=UTC)
    assert next_times(parse("TZ=UTC */15 * * * *"), start, 3) == [
        datetime(2026, 12, 5, 4, 15, tzinfo=UTC), datetime(2026, 12, 5, 4, 30, tzinfo=UTC),
        datetime(2026, 12, 5, 4, 45, tzinfo=UTC)]
    assert next_times(parse("TZ=UTC 0 0 1 1 *"), start, 1) == [datetime(2027, 1, 1, tzinfo=UTC)]


def test_next_times_in_the_schedules_zone() -> None:
    start = datetime(2026, 12, 5, 0, 0, tzinfo=UTC)
    (t,) = next_times(parse("CRON_TZ=America/Sao_Paulo 0 2 * * *"), start, 1)
    assert t.utcoffset() == timedelta(hours=-3)
    assert (t.hour, t.day) == (2, 5) and t.astimezone(UTC).hour == 5


def test_next_times_across_a_dst_change() -> None:
    zone = ZoneInfo("Europe/Lisbon")
    start = datetime(2027, 3, 27, 12, 0, tzinfo=zone)  # DST starts 28 Mar 2027, 01:00 -> 02:00
    times = next_times(parse("CRON_TZ=Europe/Lisbon 0 12 * * *"), start, 2)
    assert [(t.day, t.hour) for t in times] == [(28, 12), (29, 12)]
    assert times[0].utcoffset() == timedelta(hours=1)
    assert times[0].astimezone(UTC) - start.astimezone(UTC) == timedelta(hours=23)


def test_seconds_field() -> None:
    start = datetime(2026, 12, 5, 4, 10, 0, tzinfo=UTC)
    assert next_times(parse("TZ=UTC * * * * * 30"), start, 2) == [
        datetime(2026, 12, 5, 4, 10, 30, tzinfo=UTC), datetime(2026, 12, 5, 4, 11, 30, tzinfo=UTC)]


def test_in_words() -> None:
    now = datetime(2026, 11, 26, 7, 0, tzinfo=timezone(timedelta(hours=-3), "-03"))
    when = datetime(2026, 11, 27, 2, 0, tzinfo=now.tzinfo)
    assert in_words(when, now) == "Fri 27 Nov 2026 02:00 -03 (in 19 hours)"
    assert in_words(now + timedelta(seconds=1), now).endswith("(in 1 second)")
    assert in_words(now + timedelta(days=2, hours=1, minutes=5), now).endswith("(in 2 days 1 hour)")
    assert in_words(now + timedelta(seconds=5), now, seconds=True).startswith("Thu 26 Nov 2026 07:00:05")


def test_describe_schedule(write_flow: Callable[..., Path]) -> None:
    wf = load_workflow(write_flow("name: w\nschedule: ['TZ=UTC 0 2 * * *']\nsteps:\n  - {name: a, run: 'true'}\n"))
    (line,) = describe_schedule(wf, datetime(2026, 12, 5, 1, 0, tzinfo=UTC))
    assert line.startswith("schedule 'TZ=UTC 0 2 * * *', next: Sat 05 Dec 2026 02:00 UTC (in 1 hour)")
    assert line.count(";") == 2


def test_clean_path() -> None:
    assert clean_path("/usr/bin:.::/bin/:/usr/bin:bin:/opt/x//") == "/usr/bin:/bin:/opt/x"
    assert clean_path("") == ""
    assert clean_path("/") == "/"
