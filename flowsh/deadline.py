"""When a run must be done by (docs/semantics.md DEADLINE-*).

``deadline:`` is either a time of day ``06:00`` (``HH:MM`` or ``HH:MM:SS``) in the zone of
the workflow's `schedule` (its ``CRON_TZ``, else the local zone cron uses): the first such
time at or after the run's slot; or a duration ``4h`` after the slot. A run that stands for
no slot (started by hand) counts from its own start instead, so a hand-started run of a
workflow with a deadline is held to the same promise from the moment it starts.

``FLOWSH_NOW`` (flowsh/slot.py) is the clock here too: tests set "now" a second before a
deadline instead of waiting for one.
"""

from __future__ import annotations

import contextlib
import re
from datetime import datetime, time, timedelta, timezone, tzinfo
from typing import TYPE_CHECKING

from flowsh.durations import parse_duration

if TYPE_CHECKING:
    from flowsh.events import RunContext

_CLOCK = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)(?::([0-5]\d))?$")


def parse_deadline(value: object) -> time | float:
    """A time of day, or a duration in seconds (more than 0); ValueError otherwise."""
    if isinstance(value, str):
        m = _CLOCK.match(value.strip())
        if m:
            return time(int(m.group(1)), int(m.group(2)), int(m.group(3) or 0))
        if ":" in value:
            raise ValueError(f"deadline {value!r}: a time of day is HH:MM or HH:MM:SS "
                             "(00:00 to 23:59:59)")
    if isinstance(value, int | float) and not isinstance(value, bool):
        # YAML 1.1 reads an unquoted `6:00` as the number 360 (base 60): a bare number is
        # refused rather than taken for 6 minutes when 6 a.m. was meant.
        raise ValueError(f"deadline {value!r} is a bare number (YAML reads 6:00 as 360): "
                         'write a time of day as "06:00", or a duration with its unit (4h)')
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise ValueError(f"deadline: {exc} (or a time of day such as 06:00)") from None
    if seconds <= 0:
        raise ValueError("deadline must be more than 0")
    return seconds


def zone_of(schedule: list[str]) -> tzinfo:
    """The zone a time-of-day deadline is read in: the first schedule's, else local."""
    from flowsh.cron import parse
    from flowsh.slot import local_zone

    for text in schedule:
        try:
            zone = parse(text).zone()
        except ValueError:
            continue
        if zone is not None:
            return zone
    return local_zone()


def due(value: str, base: datetime, schedule: list[str]) -> datetime:
    """The deadline of a run whose slot (or, without one, start) is `base`."""
    parsed = parse_deadline(value)
    if isinstance(parsed, float):
        return base + timedelta(seconds=parsed)
    zone = zone_of(schedule)
    local = base.astimezone(zone)
    for days in range(3):  # today's, else tomorrow's (a DST gap may skip one day's)
        day = local.date() + timedelta(days=days)
        wall = datetime.combine(day, parsed).replace(tzinfo=zone)
        # A wall time in a DST gap does not exist: round-trip through UTC moves it forward.
        when = wall.astimezone(timezone.utc).astimezone(zone)
        if when >= base:
            return when
        # One that happens twice (clocks went back) is also due at its second occurrence:
        # a slot in the repeated hour is due at the same wall time later that hour.
        again = wall.replace(fold=1).astimezone(timezone.utc).astimezone(zone)
        if again.replace(tzinfo=None) == wall.replace(tzinfo=None) and again >= base:
            return again
    raise ValueError(f"deadline {value!r}: no such time after {base.isoformat()}")


def next_expected(schedule: list[str], after: datetime) -> datetime | None:
    """The next fire time of `schedule` strictly after `after` (None: no schedule)."""
    if not schedule:
        return None  # before importing croniter: every run's metrics ask (~6 ms)
    from typing import Any

    from croniter import croniter

    from flowsh.cron import parse
    from flowsh.slot import local_zone, repeated

    best: datetime | None = None
    for text in schedule:
        sched = parse(text)
        it: Any = croniter(sched.expr, after.astimezone(sched.zone() or local_zone()))
        t: datetime = it.get_next(datetime)
        while repeated(sched, t):  # the second of a repeated wall time fires not (SLOT-1)
            t = it.get_next(datetime)
        if best is None or t < best:
            best = t
    return best


def of_run(ctx: RunContext) -> datetime | None:
    """The deadline of the run `ctx` is about (None: no `deadline`), computed once per run
    (the alerts and the metrics plugins must agree on it)."""
    mine = ctx.slot("deadline")
    if "due" not in mine:
        wf = ctx.workflow
        when = None
        if wf.deadline:  # slot.py (and cron.py) only then: every run's end asks
            from flowsh.slot import now, parse_time

            base = now()
            if ctx.run.scheduled_time:
                with contextlib.suppress(ValueError):
                    base = parse_time(ctx.run.scheduled_time)
            try:
                when = due(wf.deadline, base, list(wf.schedule))
            except OverflowError:
                # Past the calendar's ends (year 1, year 9999): an early slot's deadline is
                # long gone (fire at the start, DEADLINE-3), a late one's never comes.
                when = datetime(1, 1, 1, tzinfo=timezone.utc) if base.year < 5000 else None
        mine["due"] = when
    result: datetime | None = mine["due"]
    return result
