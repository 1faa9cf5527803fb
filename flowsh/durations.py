"""Durations as people write them: ``90s``, ``5m``, ``1h30m``, ``250ms``, ``2d``, or seconds."""

from __future__ import annotations

import math
import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
DURATION_PATTERN = r"^\s*((\d+(\.\d+)?)(ms|s|m|h|d|w)\s*)+$|^\s*\d+(\.\d+)?\s*$"


# The longest duration flowsh accepts (a timeout, a retry delay, a grace period): a year.
# Longer is a typo, and a float that large (or inf, nan) would break the timers.
MAX_SECONDS = 365 * 86400.0


def parse_duration(value: object) -> float:
    """Return seconds. Raises ValueError with a message a person can act on."""
    seconds = _parse(value)
    if not math.isfinite(seconds) or seconds > MAX_SECONDS:
        raise ValueError(f"duration {value!r} is out of range: at most 365d")
    return seconds


def _parse(value: object) -> float:
    if isinstance(value, bool):  # `yes` in YAML 1.1; FILE-5 words it as for numbers
        raise ValueError(f"expected a duration (e.g. 90s, 5m), not {'true' if value else 'false'}")
    if value is None:  # `timeout:` with no value (or ~): not "invalid duration None"
        raise ValueError("expected a duration (e.g. 90s, 5m), not null")
    if isinstance(value, int | float):
        if math.isnan(value):
            raise ValueError("duration nan is not a number")
        if value < 0:
            raise ValueError(f"duration must not be negative: {value!r}")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"invalid duration {value!r}: use e.g. 90s, 5m, 1h30m")
    if not re.match(DURATION_PATTERN, value):
        # Blanks may separate parts (`1h 30m`), never split one (`1 0s`, `5 m s`).
        raise ValueError(f"invalid duration {value!r}: use e.g. 90s, 5m, 1h30m, 250ms")
    text = "".join(value.split())
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    pos, total = 0, 0.0
    for m in _PART.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise ValueError(f"invalid duration {value!r}: use e.g. 90s, 5m, 1h30m, 250ms")
    return total


def format_duration(seconds: float) -> str:
    """Short human form: ``850ms``, ``12.3s``, ``4m05s``, ``2h03m``."""
    # Round first, then pick the unit: 0.9996 s is 1.0s (not 1000ms), 59.96 s is 1m00s.
    if round(seconds * 1000) < 1000:
        return f"{seconds * 1000:.0f}ms"
    if round(seconds, 1) < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
