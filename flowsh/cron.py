"""Cron expressions: validation (croniter), next fire times, and saying them in words.

A `schedule` entry is a cron expression, optionally preceded by ``CRON_TZ=Zone`` (or
``TZ=Zone``): ``"CRON_TZ=Europe/Lisbon 0 2 * * *"``. Five fields as cron reads them, or six
with a trailing seconds field (croniter's convention) for `flowsh scheduler run` and
systemd timers; ``@daily`` and friends are accepted too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flowsh.model import Workflow

_TZ_PREFIX = re.compile(r"^\s*(?:CRON_)?TZ=(\S+)\s+(.*)$")
_NICKNAMES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


@dataclass(frozen=True)
class Schedule:
    text: str  # as written
    expr: str  # the cron fields, nicknames expanded
    tz: str | None

    @property
    def has_seconds(self) -> bool:
        return len(self.expr.split()) == 6

    def zone(self) -> tzinfo | None:
        if self.tz is None:
            return None
        from zoneinfo import ZoneInfo

        return ZoneInfo(self.tz)


def parse(text: str) -> Schedule:
    """Validate one schedule entry; ValueError with a message a person can act on."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("empty cron expression")
    tz = None
    body = text.strip()
    m = _TZ_PREFIX.match(body)
    if m:
        tz, body = m.group(1), m.group(2).strip()
        _check_zone(tz)
    body = _NICKNAMES.get(body.lower(), body)
    if body.startswith("@"):
        raise ValueError(f"unknown cron nickname {body!r} (use @hourly, @daily, @weekly...)")
    fields = body.split()
    if len(fields) not in (5, 6):
        raise ValueError(
            f"cron expression {text!r} has {len(fields)} fields; expected 5 "
            "(minute hour day-of-month month day-of-week) or 6 (with seconds last)"
        )
    from croniter import croniter

    try:
        it = croniter(body)
    except (ValueError, KeyError) as exc:  # croniter's errors subclass ValueError
        raise ValueError(f"invalid cron expression {text!r}: {exc}") from None
    try:
        # `0 0 30 2 *` parses but names no date: every later fire-time computation (validate's
        # next times, a run's slot) would fail far from the file.
        it.get_next(float)
    except ValueError:
        raise ValueError(f"cron expression {text!r} never fires (no such date)") from None
    return Schedule(text=text, expr=" ".join(fields), tz=tz)


def extensions(sched: Schedule) -> bool:
    """The expression uses croniter's extensions (``L``, ``W``, ``#``) that cron's own
    fields do not have: no crontab line, systemd timer or exported script reads them."""
    from croniter import croniter

    fields, nth_weekday = croniter.expand(" ".join(sched.expr.split()[:5]))
    return bool(nth_weekday or re.search(r"\dW|W\d|LW", sched.expr.upper()) or any(
        isinstance(v, str) and v != "*" for f in fields for v in f))


def _check_zone(tz: str) -> None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {tz!r} (use an IANA name like Europe/Lisbon)"
        ) from None


def next_times(sched: Schedule, start: datetime | None = None, count: int = 3) -> list[datetime]:
    """The next `count` fire times after `start` (aware datetimes, in the schedule's zone)."""
    from croniter import croniter

    zone = sched.zone()
    if start is None:
        start = datetime.now(zone).astimezone(zone) if zone else datetime.now().astimezone()
    elif zone is not None:
        start = start.astimezone(zone)
    it: Any = croniter(sched.expr, start)
    return [it.get_next(datetime) for _ in range(count)]


def in_words(when: datetime, now: datetime, *, seconds: bool = False) -> str:
    """``Fri 27 Nov 2026 02:00 -03 (in 18 hours 59 minutes)``."""
    delta = int((when - now).total_seconds())
    fmt = "%a %d %b %Y %H:%M:%S" if seconds or when.second else "%a %d %b %Y %H:%M"
    return f"{when.strftime(fmt)} {when.strftime('%Z') or ''} ({_ago(delta)})".replace("  ", " ")


def _ago(seconds: int) -> str:
    if seconds < 60:
        return f"in {max(seconds, 0)} second{'s' if seconds != 1 else ''}"
    parts = []
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        n, seconds = divmod(seconds, size)
        if n:
            parts.append(f"{n} {unit}{'s' if n != 1 else ''}")
    return "in " + " ".join(parts[:2])


def describe_schedule(wf: Workflow, now: datetime | None = None) -> list[str]:
    """Lines for `flowsh validate`: each schedule and its next three fire times in words."""
    lines = []
    for text in wf.schedule:
        sched = parse(text)
        zone = sched.zone()
        current = (now or datetime.now().astimezone()).astimezone(zone)
        times = next_times(sched, current, 3)
        lines.append(f"schedule {text!r}, next: " + "; ".join(
            in_words(t, current, seconds=sched.has_seconds) for t in times
        ))
    return lines


def check(value: str) -> str:
    """pydantic validator for one `schedule` entry."""
    parse(value)
    return value


def clean_path(path: str) -> str:
    """A PATH for a scheduled line: absolute directories only, each once, in order.

    Cron's own PATH is ``/usr/bin:/bin``; scheduled lines get ``/usr/local/bin:/usr/bin:/bin``
    written once, or (``--path-from-env``) the user's, with the duplicates and the relative
    entries (``.``, empty) an interactive PATH collects dropped: they would make what runs
    depend on the directory cron starts in.
    """
    seen: dict[str, None] = {}
    for part in path.split(":"):
        part = part.rstrip("/") or ("/" if part else "")
        if part.startswith("/"):
            seen.setdefault(part, None)
    return ":".join(seen)
