"""The checks of `executor_options` that need no broker: run by `flowsh validate` and at
the start of a run (as the factory's `check_options`), and by the executor itself."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from flowsh.api import OptionError

OPTIONS = ("broker", "backend", "queue", "connect_timeout", "lost_after", "queue_timeout",
           "check_workers", "transport_options")
_TEXT = ("broker", "backend", "queue")
_SECONDS = ("connect_timeout", "lost_after", "queue_timeout")
MIN_LOST_AFTER = 2.0


def seconds(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0 \
            or not math.isfinite(value):
        raise OptionError(f"executor 'celery': executor_options.{name} must be a finite "
                          f"number of seconds > 0 (got {value!r})", key=name)
    return float(value)


def check_options(options: Mapping[str, Any]) -> None:
    """Raise OptionError naming the first bad option."""
    for name, value in options.items():
        if name not in OPTIONS:
            raise OptionError(f"executor 'celery': unknown executor_options {name} "
                              f"(known: {', '.join(OPTIONS)})", key=name)
        if name in _TEXT and value is not None and not isinstance(value, str):
            raise OptionError(f"executor 'celery': executor_options.{name} must be text "
                              f"(got {value!r})", key=name)
        if name in _SECONDS:
            seconds(name, value)
    lost_after = options.get("lost_after")
    if lost_after is not None and seconds("lost_after", lost_after) < MIN_LOST_AFTER:
        raise OptionError("executor 'celery': executor_options.lost_after must be at "
                          f"least 2 seconds (got {lost_after!r})", key="lost_after")
    if not isinstance(options.get("check_workers", True), bool):
        raise OptionError("executor 'celery': executor_options.check_workers must be "
                          f"true or false (got {options['check_workers']!r})",
                          key="check_workers")
    transport = options.get("transport_options")
    if transport is not None and not isinstance(transport, Mapping):
        raise OptionError("executor 'celery': executor_options.transport_options must "
                          "be a mapping (e.g. {visibility_timeout: 7200})",
                          key="transport_options")
