"""flowsh.slot: the slot a scheduled run stands for, with the clock driven by the tests."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from flowsh.errors import UsageError
from flowsh.slot import (
    bash_schedules,
    chosen,
    format_time,
    latest_slot,
    now,
    parse_time,
    same_slot,
    slots_between,
)


def at(text: str) -> datetime:
    return parse_time(text)


def fmt(times: list[datetime]) -> list[str]:
    return [format_time(t) for t in times]


@pytest.mark.parametrize("bad", ["yesterday", "2026-12-05 02:00:00+01:00",
                                 "2026-12-05T02:00:00", "2026-12-05T02:00:00.5Z",
                                 "2026-02-30T02:00:00Z", "2026-12-05T25:00:00Z", ""])
def test_parse_time_refuses_what_is_not_rfc3339_with_an_offset(bad: str) -> None:
    with pytest.raises(ValueError, match=r"RFC 3339|not a valid time"):
        parse_time(bad)


@pytest.mark.parametrize("bad", ["2026-12-05T02:00:00+05:60", "2026-12-05T02:00:00+24:00",
                                 "2026-12-05T02:00:00-99:00"])
def test_parse_time_refuses_an_offset_that_is_none(bad: str) -> None:
    with pytest.raises(ValueError, match="RFC 3339"):
        parse_time(bad)


@pytest.mark.parametrize("bad", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:00:00-05:00"])
def test_parse_time_refuses_an_instant_beyond_the_calendar(bad: str) -> None:
    with pytest.raises(ValueError, match="out of range"):
        parse_time(bad)
    assert parse_time("0001-01-01T00:00:00+00:00").year == 1


def test_z_is_written_as_an_offset() -> None:
    assert format_time(at("2026-12-05T01:00:00Z")) == "2026-12-05T01:00:00+00:00"
    assert format_time(at("2026-12-05T01:00:00z")) == "2026-12-05T01:00:00+00:00"


def test_latest_slot_counts_a_fire_time_equal_to_now_and_none_after() -> None:
    daily = ["CRON_TZ=Europe/Lisbon 0 2 * * *"]
    assert fmt([latest_slot(daily, at("2026-12-05T02:00:00Z"))]) == [  # type: ignore[list-item]
        "2026-12-05T02:00:00+00:00"]
    assert fmt([latest_slot(daily, at("2026-12-05T01:59:59Z"))]) == [  # type: ignore[list-item]
        "2026-12-04T02:00:00+00:00"]
    # A fraction of a second past the fire time is still that slot.
    late = at("2026-12-05T02:00:00Z").replace(microsecond=999999)
    assert format_time(latest_slot(daily, late)) == "2026-12-05T02:00:00+00:00"  # type: ignore[arg-type]


def test_latest_slot_in_the_schedules_zone_and_latest_of_several() -> None:
    # 23:30 UTC on the 4th is 08:30 on the 5th in Tokyo: its 08:00 slot is "today" there.
    texts = ["CRON_TZ=Asia/Tokyo 0 8 * * *", "CRON_TZ=America/Los_Angeles 0 8 * * *"]
    got = latest_slot(texts, at("2026-12-04T23:30:00Z"))
    assert got is not None and format_time(got) == "2026-12-05T08:00:00+09:00"
    got = latest_slot(texts, at("2026-12-05T16:30:00Z"))  # 08:30 in Los Angeles
    assert got is not None and format_time(got) == "2026-12-05T08:00:00-08:00"


def test_a_late_start_still_stands_for_its_slot() -> None:
    """Cron under load starts the 02:00 job at 02:07: the slot is 02:00."""
    got = latest_slot(["0 2 * * *"], at("2026-12-05T02:07:13+00:00"))
    assert got is not None and got == at("2026-12-05T02:00:00+00:00")


def test_dst_fall_back_a_fixed_hour_is_one_slot_an_hourly_one_two() -> None:
    ny = ["CRON_TZ=America/New_York 30 1 * * *"]
    # 01:45 EST (06:45Z), after the second 01:30: still the first one (EDT).
    got = latest_slot(ny, at("2026-11-01T06:45:00Z"))
    assert got is not None and format_time(got) == "2026-11-01T01:30:00-04:00"
    window = slots_between(ny, at("2026-10-31T00:00:00Z"), at("2026-11-02T12:00:00Z"))
    assert fmt(window) == ["2026-10-31T01:30:00-04:00", "2026-11-01T01:30:00-04:00",
                           "2026-11-02T01:30:00-05:00"]
    hourly = ["CRON_TZ=America/New_York 30 * * * *"]
    got = latest_slot(hourly, at("2026-11-01T06:45:00Z"))
    assert got is not None and format_time(got) == "2026-11-01T01:30:00-05:00"


def test_dst_spring_forward_a_skipped_time_fires_at_the_jump() -> None:
    ny = ["CRON_TZ=America/New_York 30 2 * * *"]
    window = slots_between(ny, at("2026-03-07T00:00:00Z"), at("2026-03-09T12:00:00Z"))
    assert fmt(window) == ["2026-03-07T02:30:00-05:00", "2026-03-08T03:00:00-04:00",
                           "2026-03-09T02:30:00-04:00"]


def test_slots_between_includes_its_start_not_its_end() -> None:
    texts = ["CRON_TZ=UTC 0 2 * * *"]
    got = slots_between(texts, at("2026-12-03T02:00:00Z"), at("2026-12-05T02:00:00Z"))
    assert fmt(got) == ["2026-12-03T02:00:00+00:00", "2026-12-04T02:00:00+00:00"]
    got = slots_between(texts, at("2026-12-03T02:00:01Z"), at("2026-12-05T02:00:01Z"))
    assert fmt(got) == ["2026-12-04T02:00:00+00:00", "2026-12-05T02:00:00+00:00"]


def test_slots_between_one_instant_once_and_a_bound() -> None:
    # Two expressions firing at the same instant from two zones: one slot.
    texts = ["CRON_TZ=UTC 0 2 * * *", "CRON_TZ=Europe/Berlin 0 3 * * *"]
    got = slots_between(texts, at("2026-12-04T00:00:00Z"), at("2026-12-05T00:00:00Z"))
    assert len(got) == 1
    with pytest.raises(ValueError, match="more than"):
        slots_between(["* * * * * *"], at("2026-12-01T00:00:00Z"), at("2026-12-05T00:00:00Z"))


def test_now_is_the_test_hook_when_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWSH_NOW", "2026-12-05T10:00:00Z")
    assert now() == datetime(2026, 12, 5, 10, tzinfo=timezone.utc)
    monkeypatch.setenv("FLOWSH_NOW", "soon")
    with pytest.raises(UsageError, match="FLOWSH_NOW"):
        now()
    monkeypatch.delenv("FLOWSH_NOW")
    assert abs((now() - datetime.now(timezone.utc)).total_seconds()) < 5


def test_chosen_reads_the_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWSH_NOW", "2026-12-05T10:00:00Z")
    sched = ["CRON_TZ=UTC 0 */4 * * *"]
    assert chosen(sched, scheduled=False, scheduled_time=None, crons=[], where="f") == ([], None)
    texts, slot = chosen(sched, scheduled=True, scheduled_time=None, crons=[], where="f")
    assert texts == sched and slot == at("2026-12-05T08:00:00Z")
    texts, slot = chosen(sched, scheduled=True, scheduled_time=None,
                         crons=["CRON_TZ=UTC 30 9 * * *"], where="f")
    assert texts == ["CRON_TZ=UTC 30 9 * * *"] and slot == at("2026-12-05T09:30:00Z")
    with pytest.raises(UsageError, match="does not combine"):
        chosen(sched, scheduled=True, scheduled_time="2026-12-05T10:00:00Z", crons=[],
               where="f")
    with pytest.raises(UsageError, match="f: --scheduled: no `schedule`"):
        chosen([], scheduled=True, scheduled_time=None, crons=[], where="f")
    with pytest.raises(UsageError, match="--scheduled-cron"):
        chosen(sched, scheduled=True, scheduled_time=None, crons=["61 * * * *"], where="f")


def test_same_slot_compares_instants() -> None:
    assert same_slot("2026-12-05T02:00:00+01:00", at("2026-12-05T01:00:00Z"))
    assert not same_slot("2026-12-05T02:00:00+00:00", at("2026-12-05T01:00:00Z"))
    assert not same_slot(None, at("2026-12-05T01:00:00Z"))
    assert not same_slot("garbage", at("2026-12-05T01:00:00Z"))


def test_bash_schedules_expands_the_fields() -> None:
    assert bash_schedules(["CRON_TZ=Asia/Tokyo */30 9-10 * * 1-5"]) == [
        "Asia/Tokyo| 0 30 | 9 10 |*|*| 1 2 3 4 5 |"]
    assert bash_schedules(["0 0 1,15 * 0"]) == ["| 0 | 0 | 1 15 |*| 0 |o"]
    assert bash_schedules(["0 0 * * * 30"])[0].endswith("|s")
