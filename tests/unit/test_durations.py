"""flowsh.durations: parse_duration and format_duration."""

from __future__ import annotations

import math
import re

import pytest

from flowsh.durations import DURATION_PATTERN, MAX_SECONDS, format_duration, parse_duration


@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90.0), ("5m", 300.0), ("1h30m", 5400.0), ("250ms", 0.25), ("2d", 172800.0),
    ("1w", 604800.0), ("1.5h", 5400.0), ("45", 45.0), (" 10s ", 10.0), ("1h 30m", 5400.0),
    ("0", 0.0), ("1m1ms", 60.001),
])
def test_parse_accepted_forms(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


def test_parse_numbers() -> None:
    assert parse_duration(3) == 3.0
    assert parse_duration(2.5) == 2.5


@pytest.mark.parametrize("bad", ["", "abc", "10x", "1h-5m", "m5", "h", "-5s", "5s!"])
def test_parse_rejects_text_with_hint(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(bad)


@pytest.mark.parametrize("bad", [True, False, None, [1], {"s": 1}])
def test_parse_rejects_non_durations(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_parse_rejects_negative_nan_inf() -> None:
    with pytest.raises(ValueError, match="negative"):
        parse_duration(-1)
    with pytest.raises(ValueError, match="not a number"):
        parse_duration(math.nan)
    with pytest.raises(ValueError, match="out of range"):
        parse_duration(math.inf)


def test_parse_upper_bound_is_a_year() -> None:
    assert parse_duration("365d") == MAX_SECONDS
    assert parse_duration("52w") < MAX_SECONDS
    with pytest.raises(ValueError, match="at most 365d"):
        parse_duration("366d")
    with pytest.raises(ValueError, match="out of range"):
        parse_duration(MAX_SECONDS + 1)


@pytest.mark.parametrize(("seconds", "text"), [
    (0.85, "850ms"), (0, "0ms"), (12.34, "12.3s"), (59.9, "59.9s"), (245, "4m05s"),
    (60, "1m00s"), (3600, "1h00m"), (7380, "2h03m"),
])
def test_format(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize("text", ["850ms", "4m05s", "2h03m"])
def test_format_round_trips_through_parse(text: str) -> None:
    assert format_duration(parse_duration(text)) == text


@pytest.mark.parametrize("text", ["1h 30m", " 90s ", "45", "250ms", "1.5h"])
def test_schema_pattern_accepts_what_parse_accepts(text: str) -> None:
    assert re.match(DURATION_PATTERN, text)
    parse_duration(text)


@pytest.mark.parametrize("text", ["1 0s", "5 m s", "1 0"])
def test_spaces_inside_a_number_or_unit_are_refused(text: str) -> None:
    assert not re.match(DURATION_PATTERN, text)
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(("seconds", "text"), [(59.96, "1m00s"), (0.9996, "1.0s")])
def test_format_rounds_into_the_next_unit(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
