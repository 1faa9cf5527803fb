"""User-facing errors.

Every error a user can cause or meet is a subclass of `FlowshError`. The CLI turns
them into one line on stderr and the class's `exit_code`; nothing else in flowsh
decides exit codes. The codes are documented in docs/reference.md.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

# Exit codes (docs/reference.md#exit-codes).
EXIT_OK = 0
EXIT_FAILED = 1  # the run failed
EXIT_USAGE = 2  # bad usage or an invalid workflow file
EXIT_STATE = 3  # state store unreadable, corrupt, not writable, disk full
EXIT_NOT_FOUND = 4  # unknown run id / step / channel
EXIT_PLUGIN = 5  # plugin install/uninstall failed
EXIT_LOCKED = 75  # EX_TEMPFAIL: another run holds the workflow's lock
EXIT_INTERRUPTED = 130  # SIGINT / SIGTERM


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` with the known name nearest to a mistyped one, or ""."""
    import difflib  # on a mistake only: ~1 ms of every start otherwise

    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


class FlowshError(Exception):
    """Base of every error shown to a user as one line."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(FlowshError):
    """Bad command-line usage."""

    exit_code = EXIT_USAGE


class WorkflowError(UsageError):
    """An invalid workflow file: rendered as ``FILE:LINE:COL: message``."""

    def __init__(
        self,
        message: str,
        *,
        path: Path | str | None = None,
        line: int | None = None,
        col: int | None = None,
        hint: str | None = None,
    ) -> None:
        self.path = str(path) if path is not None else None
        self.line = line
        self.col = col
        self.detail = message
        where = self.path or "<workflow>"
        if line is not None:
            where += f":{line}"
            if col is not None:
                where += f":{col}"
        super().__init__(f"{where}: {message}", hint=hint)


class OptionError(UsageError):
    """An executor option that is wrong: `key` names it within `executor_options`, so a
    check before the run can point at its line (flowsh.checks)."""

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class StateError(FlowshError):
    """The state store cannot be read or written (permission, corruption, full disk)."""

    exit_code = EXIT_STATE


class NotFoundError(FlowshError):
    """A run id, step or channel that does not exist."""

    exit_code = EXIT_NOT_FOUND


class LockHeldError(FlowshError):
    """Another run of the same workflow holds the overlap lock."""

    exit_code = EXIT_LOCKED


class PluginError(FlowshError):
    """A plugin failed to load, registered a duplicate, or failed to install."""

    exit_code = EXIT_PLUGIN

    def __init__(self, message: str, *, plugin: str | None = None) -> None:
        super().__init__(message)
        self.plugin = plugin
