"""What the workflow model's two layers share: names' grammars, bounds, and the checks
both the plain model (`flowsh.model`, the fast path) and the pydantic one
(`flowsh.modelcheck`: errors, JSON Schema) apply. Imports nothing heavy.
"""

from __future__ import annotations

import re
from typing import Any, Literal

IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
STEP_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\Z")

# Bounds on counts (docs/reference.md): beyond them a value is a typo, not a plan.
MAX_RETRIES = 1000
MAX_CONCURRENCY = 10000
# A step's name makes file names (`<step>.secret-outputs.json` is 20 more): under the 255
# bytes a file name may have, with room to spare.
MAX_STEP_NAME = 128
MAX_ITEMS = 10000

# A pool's name makes a directory under $FLOWSH_HOME/pools (docs/semantics.md POOL).
POOL_NAME = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$"
MAX_POOL_SIZE = 1000

Severity = Literal["critical", "warning", "info"]
EventName = Literal["run_failed", "run_succeeded", "step_failed", "step_retry", "run_long",
                    "run_late"]

# Names the bash of every step sets itself when it starts, whatever its environment says,
# or computes on every read (RANDOM, LINENO...; PS4 is reset when bash runs as root): a
# param, env or output of one of them would never reach the step (PARAM-6). Refused on
# every runtime rather than lost in silence.
BASH_SETS = frozenset({
    "BASH", "BASH_VERSION", "BASH_VERSINFO", "SHLVL", "OPTIND", "OPTERR", "OLDPWD", "PWD",
    "PPID", "PS1", "PS2", "PS4", "COMP_WORDBREAKS", "BASHOPTS", "SHELLOPTS", "BASHPID",
    "LINENO", "HISTCMD", "RANDOM", "SRANDOM", "EPOCHSECONDS", "EPOCHREALTIME",
})


def shell_named(value: str | None) -> str | None:
    if value is not None and not value.strip():
        raise ValueError("shell is blank: name an interpreter (bash, sh, zsh...)")
    return value


def positive_queue_timeout(value: float | None) -> float | None:
    # 0 would read as "unset" (the executor's default, minutes) where one means "at once".
    if value is not None and value <= 0:
        raise ValueError("queue_timeout must be more than 0s (how long a step may wait "
                         "for a worker)")
    return value


def str_value(value: Any) -> Any:
    """Env and param values are strings; accept YAML scalars (numbers, booleans) as text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


def not_a_bool(value: Any) -> Any:
    """A count, size, factor or exit code written `true` or `yes` is a boolean to YAML,
    which pydantic's lax mode took as 1 (or 0) without a word."""
    if isinstance(value, bool):
        raise ValueError(f"expected a number, not {'true' if value else 'false'}")
    return value


def as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


def check_cron(value: str) -> str:
    from flowsh.cron import check  # croniter only when a file has a schedule

    return check(value)


def check_idents(mapping: dict[str, str], what: str) -> dict[str, str]:
    for key in mapping:
        if not IDENT.match(key):
            raise ValueError(
                f"{what} name {key!r} is not a shell identifier (letters, digits, _; "
                "not starting with a digit)"
            )
        if key.upper().startswith("FLOWSH_"):
            raise ValueError(f"{what} name {key!r} is reserved: FLOWSH_* names are flowsh's own")
        if key in BASH_SETS:
            raise ValueError(f"{what} name {key!r} cannot reach a step: the step's bash sets "
                             f"{key} itself (when it starts, or on every read); rename it")
    return mapping


def check_globs(v: list[str]) -> list[str]:
    for glob in v:
        # The exported script keeps them one a line.
        if not glob.strip() or "\n" in glob or "\0" in glob:
            raise ValueError(f"{glob!r} is not a glob (empty, or a line break in it)")
    return v
