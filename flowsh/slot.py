"""The slot a scheduled run stands for, and the slots of a window (docs/semantics.md SLOT-*).

A slot is a fire time of the workflow's `schedule:` in the schedule's own zone. A run
started by a schedule stands for the latest fire time at or before its start, computed
when it starts: cron starts a job late under load (or after a suspend), and the run must
still know which slot it is for, so the crontab line carries only ``--scheduled`` and no
time of its own (cron cannot compute one: ``%`` is special in a crontab, and ``date`` run
late gives the late time). Every step sees the slot as ``FLOWSH_SCHEDULED_TIME``,
RFC 3339 with the zone's offset (``2026-12-05T02:00:00+01:00``).

``FLOWSH_NOW`` (an RFC 3339 time) replaces the clock for these computations: a hook for
tests, which drive the clock instead of waiting for real slots.
"""

from __future__ import annotations

import os
import re
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any

from flowsh.cron import Schedule, parse

NOW_VAR = "FLOWSH_NOW"  # for testing: "now" for slots and catch-up
MAX_SLOTS = 10000  # a window wider than this many fire times is a typo, not a plan

# Whole seconds: a slot is a fire time, and the exported script checks the same grammar.
# An offset is at most 23:59 (RFC 3339 time-numoffset): fromisoformat would read +05:60 as
# +06:00, a slot nobody gave.
_RFC3339 = re.compile(
    r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d([Zz]|[+-]([01]\d|2[0-3]):[0-5]\d)\Z")


def parse_time(text: str) -> datetime:
    """An RFC 3339 time with its offset (``Z`` or ``+01:00``); ValueError otherwise."""
    return _parse(text)[0]


def parse_instant(text: str) -> datetime:
    """`parse_time`'s instant in UTC: the form slots are compared in (`same_slot`)."""
    return _parse(text)[1]


def _parse(text: str) -> tuple[datetime, datetime]:
    if not isinstance(text, str) or not _RFC3339.match(text.strip()):
        raise ValueError(f"{text!r} is not an RFC 3339 time in whole seconds with an "
                         "offset (e.g. 2026-12-05T02:00:00+01:00 or 2026-12-05T01:00:00Z)")
    try:
        when = datetime.fromisoformat(text.strip().replace("z", "Z"))
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a valid time: {exc}") from None
    try:
        # Slots are compared and deadlines computed as instants: one that is no date in
        # UTC (0001-01-01T00:00:00+01:00 is in year 0) would lose its deadline.
        utc = when.astimezone(timezone.utc)
    except OverflowError:
        raise ValueError(f"{text!r} is out of range (0001-01-01 to 9999-12-31 in UTC)") \
            from None
    return when, utc


def format_time(when: datetime) -> str:
    """RFC 3339 with the offset, in whole seconds (``Z`` written ``+00:00``)."""
    return when.isoformat(timespec="seconds")


def now() -> datetime:
    """The current time (aware), or FLOWSH_NOW when set (tests)."""
    raw = os.environ.get(NOW_VAR)
    if raw:
        try:
            return parse_time(raw)
        except ValueError as exc:
            from flowsh.errors import UsageError

            raise UsageError(f"{NOW_VAR}: {exc}") from None
    return datetime.now(timezone.utc)


def local_zone() -> tzinfo:
    """The zone cron uses for a schedule without CRON_TZ: $TZ, else /etc/localtime.

    A zone with its rules, not today's fixed offset: a window that spans a DST change
    must see both offsets."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    name = os.environ.get("TZ", "").lstrip(":")
    if name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    try:
        with open("/etc/localtime", "rb") as f:
            return ZoneInfo.from_file(f)
    except (OSError, ValueError):
        return datetime.now().astimezone().tzinfo or timezone.utc


def _zone(sched: Schedule) -> tzinfo:
    return sched.zone() or local_zone()


def repeated(sched: Schedule, when: datetime) -> bool:
    """`when` is the second occurrence of a wall-clock time repeated when clocks go back,
    and the schedule names its hours: cron runs such a job once (at the first), not twice.
    A schedule firing every hour (`*` hours) fires in both hours, as real time goes on."""
    hours = sched.expr.split()[1]
    if "*" in hours:
        return False
    first = when.replace(tzinfo=None).replace(tzinfo=when.tzinfo, fold=0)
    return first.utcoffset() != when.utcoffset()


def _prev(sched: Schedule, before: datetime) -> datetime:
    from croniter import croniter

    it: Any = croniter(sched.expr, before.astimezone(_zone(sched)))
    t: datetime = it.get_prev(datetime)
    # croniter's get_prev can miss a fire time in a repeated half hour (Lord Howe, */20:
    # 01:40+11:00); its get_next does not: on from the one found to `before`.
    nxt: Any = croniter(sched.expr, t)
    for _ in range(MAX_SLOTS):
        n: datetime = nxt.get_next(datetime)
        if n >= before:
            break
        t = n
    return t


def latest_slot(texts: list[str], at: datetime) -> datetime | None:
    """The latest fire time of any of `texts` at or before `at` (None: no schedule)."""
    best: datetime | None = None
    # croniter's get_prev is strictly before its start: start one second after `at`,
    # floored, so a fire time equal to `at` counts and none after it does.
    start = at.replace(microsecond=0) + timedelta(seconds=1)
    for text in texts:
        sched = parse(text)
        t = _prev(sched, start)
        while repeated(sched, t):
            t = _prev(sched, t)
        if best is None or t > best:
            best = t
    return best


def slots_between(texts: list[str], start: datetime, end: datetime) -> list[datetime]:
    """Every fire time t of `texts` with start <= t < end, oldest first, each instant once."""
    return list(slots_by_instant(texts, start, end).values())


def slots_by_instant(texts: list[str], start: datetime,
                     end: datetime) -> dict[datetime, datetime]:
    """`slots_between`, each keyed by its instant in UTC (the key to compare: see
    `same_slot`), oldest first."""
    from croniter import croniter

    found: dict[datetime, datetime] = {}
    for text in texts:
        sched = parse(text)
        it: Any = croniter(sched.expr, (start - timedelta(seconds=1)).astimezone(_zone(sched)))
        for _ in range(MAX_SLOTS + 1):
            t: datetime = it.get_next(datetime)
            if t >= end:
                break
            if t >= start and not repeated(sched, t):
                found.setdefault(t.astimezone(timezone.utc), t)
        else:
            raise ValueError(f"schedule {text!r} fires more than {MAX_SLOTS} times in the "
                             "catch-up window; make the window shorter")
    return {k: found[k] for k in sorted(found)}


def same_slot(a: str | None, b: datetime) -> bool:
    """A recorded slot (text) is the instant `b` (offsets may differ)."""
    if not a:
        return False
    try:
        # Both in UTC: a slot in a repeated hour (01:30 on a fall-back day) compares
        # unequal to any datetime of another zone, itself included (PEP 495).
        return parse_instant(a) == b.astimezone(timezone.utc)
    except ValueError:
        return False


def chosen(schedule: list[str], *, scheduled: bool, scheduled_time: str | None,
           crons: list[str], where: str) -> tuple[list[str], datetime | None]:
    """What `flowsh run` was told: the schedule the run stands for a slot of (empty when
    none) and its slot. `--scheduled` (with `--scheduled-cron`, the entry's own
    expressions) computes it now; `--scheduled-time T` names it; neither: no slot."""
    from flowsh.errors import UsageError

    if scheduled_time is not None and (scheduled or crons):
        raise UsageError("--scheduled-time names the slot by hand; it does not combine "
                         "with --scheduled or --scheduled-cron")
    if scheduled_time is not None:
        try:
            return [], parse_time(scheduled_time)
        except ValueError as exc:
            raise UsageError(f"--scheduled-time: {exc}") from None
    if not (scheduled or crons):
        return [], None
    texts = list(crons) or list(schedule)
    if not texts:
        raise UsageError(f"{where}: --scheduled: no `schedule` in the workflow (give the "
                         "entry's expression with --scheduled-cron EXPR)")
    for text in crons:
        try:
            parse(text)
        except ValueError as exc:
            raise UsageError(f"--scheduled-cron: {exc}") from None
    return texts, latest_slot(texts, now())


def bash_schedules(texts: list[str]) -> list[str]:
    """Each schedule as the exported script's `--scheduled` reads it (runtime.sh.j2,
    flowsh_latest_slot): ``zone|minutes|hours|days|months|weekdays|flags``, each set as
    `` 0 30 `` or ``*``; flags ``o`` when days and weekdays are both restricted (either
    matches, as in cron), ``s`` when the schedule has a seconds field (the script refuses)."""
    from croniter import croniter

    out = []
    for text in texts:
        sched = parse(text)
        fields: Any = croniter(" ".join(sched.expr.split()[:5])).expanded
        sets = ["*" if f == ["*"] else " " + " ".join(str(v) for v in f) + " "
                for f in fields]
        flags = ("o" if sets[2] != "*" and sets[4] != "*" else "") + (
            "s" if sched.has_seconds else "")
        out.append("|".join([sched.tz or "", *sets, flags]))
    return out
