"""The files monitoring keeps (CSV, JSON Lines, Prometheus): where they go, appending
whole records safely, atomic replacement, timestamps, and reading the event log back.

Core, not a plugin: the writers (`builtin.log_csv`, `log_jsonl`, `metrics_prometheus`) and
the readers (`flowsh report`) share it.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import json
import os
import stat
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flowsh import fileio
from flowsh.durations import format_duration
from flowsh.errors import StateError
from flowsh.plugins import warn
from flowsh.state import ensure_private_dir, flowsh_home

if TYPE_CHECKING:
    from flowsh.model import Workflow
    from flowsh.state import RunRecord, StepRecord


@functools.lru_cache(maxsize=256)  # a run's own start/end times recur in every event
def rfc3339(ts: float | None) -> str | None:
    """``2026-11-25T02:00:03.512Z``: UTC, millisecond precision, sortable as text."""
    if ts is None:
        return None
    millis = int(ts * 1000)
    seconds, ms = divmod(millis, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{ms:03d}Z"


def resolve(setting: bool | str | None, default: str, workflow: Workflow) -> Path | None:
    """Where a writer's file goes; `default` is relative to $FLOWSH_HOME. Called for every
    event, so cached on everything it depends on."""
    return _resolve(setting, default, workflow.path, flowsh_home())


@functools.lru_cache(maxsize=64)
def _resolve(
    setting: bool | str | None, default: str, wf_path: str | None, home: Path
) -> Path | None:
    """A `monitor:` key -> a path: false/None = off, true = `default`, text = a path.

    A relative path is taken from the workflow file's directory, like the steps' workdir, so
    a cron job started from $HOME writes where the file says.
    """
    if setting is None or setting is False:
        return None
    if setting is True:
        return home / default
    path = Path(os.path.expandvars(setting)).expanduser()
    if not path.is_absolute() and wf_path:
        path = Path(wf_path).resolve().parent / path
    return path


def make_parent(path: Path) -> None:
    """Create a missing parent: 0700 under $FLOWSH_HOME, where flowsh owns the tree.

    Under $FLOWSH_HOME no directory on the way may be a symbolic link (a `logs` or
    `metrics` pointing elsewhere would have flowsh append to, or replace, another
    directory's files; docs/state.md): raises OSError (ELOOP) naming the link.
    """
    parent = path.parent
    home = Path(os.path.abspath(flowsh_home()))
    lexical = Path(os.path.abspath(parent))
    if lexical.is_relative_to(home):
        _refuse_links(lexical, home)
    if parent.is_dir():
        return
    if lexical.is_relative_to(home) or parent.resolve().is_relative_to(home.resolve()):
        try:
            ensure_private_dir(parent)
        except StateError as exc:
            raise OSError(errno.ENOTDIR, str(exc)) from None
    else:
        parent.mkdir(mode=0o755, parents=True, exist_ok=True)


def _refuse_links(directory: Path, home: Path) -> None:
    """Raise OSError(ELOOP) if a directory between `home` (itself may be a link: the user
    chose it) and `directory` is a symbolic link."""
    cur = directory
    while cur != home and cur != cur.parent:
        try:
            if stat.S_ISLNK(os.lstat(cur).st_mode):
                raise OSError(errno.ELOOP, f"{cur}: is a symbolic link; flowsh does not follow "
                              "links under its state directory (O_NOFOLLOW)")
        except FileNotFoundError:
            pass  # created below, as a directory
        cur = cur.parent


# Log files held open for the length of a run: opening costs more than the write (and a
# run appends several rows per step). `release` closes one at the end of the run, so a
# rotated log is picked up by the next run.
_open: dict[Path, int] = {}


def _fd(path: Path, mode: int) -> int:
    fd = _open.get(path)
    if fd is None:
        make_parent(path)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
                         | os.O_NOFOLLOW, mode)
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # appending through a link would write its target
                raise OSError(exc.errno, "is a symbolic link; flowsh does not follow it "
                              "(O_NOFOLLOW)") from None
            raise
        _open[path] = fd
    return fd


def release(path: Path | None) -> None:
    fd = _open.pop(path, None) if path is not None else None
    if fd is not None:
        os.close(fd)


def append_locked(path: Path, data: bytes, header: bytes = b"", mode: int = 0o600) -> None:
    """Append `data` to `path` as one write under an exclusive flock.

    O_APPEND alone keeps small writes whole on a local disk; the lock also covers writes
    over PIPE_BUF, NFS, and the "file is empty, write the header first" check, so two runs
    finishing at once never interleave rows or write the header twice.
    """
    fd = _fd(path, mode)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if header and os.fstat(fd).st_size == 0:
                data = header + data
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    except OSError:
        release(path)
        raise


def write_creating_dir(path: Path, text: str, mode: int = 0o600) -> None:
    """`flowsh.fileio.atomic_write`, creating the directory first."""
    make_parent(path)
    fileio.atomic_write(path, text, mode)


def attempts_allowed(workflow: Workflow, step: str, attempt: int = 0) -> int | None:
    """The last attempt `step` may make in this run: its budget (retries + 1), or, for a
    resumed step past it, `attempt` itself (a resume always grants one more: RESUME-5)."""
    try:
        return max(workflow.step(step).retry_count + 1, attempt)
    except KeyError:
        return None


# -- the CSV log's and the event log's records (the writers and `log_crash` share them) --

CSV_COLUMNS = ("timestamp", "workflow_id", "step", "status", "message")
CSV_DEFAULT = "logs/workflow_logs.csv"
RUN_STEP = "-"  # the step column of a run-level row; no step can be named so


def csv_row(*fields: str) -> bytes:
    import csv
    import io

    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(fields)
    return buf.getvalue().encode("utf-8")


def csv_record(run: RunRecord, step: str, status: str, message: str) -> bytes:
    stamp = rfc3339(time.time()) or ""
    return csv_row(stamp, f"{run.workflow}_{run.run_id}", step, status, message)


def step_summary(step: StepRecord) -> str:
    """``exit code 3 after 1.2s, 2 attempts``; the engine's message says why it failed."""
    parts = [step.message] if step.message else []
    if not step.message and step.exit_code is not None:
        parts.append(f"exit code {step.exit_code}")
    if step.duration is not None and step.attempts:
        parts.append(f"after {format_duration(step.duration)}")
    text = " ".join(parts)
    if step.attempts > 1:
        text += f", {step.attempts} attempts"
    return text


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def event(
    name: str, run: RunRecord, step: StepRecord | None = None, **extra: Any
) -> dict[str, Any]:
    """The JSON Lines object written for one event."""
    data: dict[str, Any] = {
        "event": name,
        "time": rfc3339(time.time()),
        "run_id": run.run_id,
        "workflow": run.workflow,
        "step": None,
        "attempt": None,
        "status": run.status,
        "exit_code": run.exit_code,
        "duration": _round(run.duration) if name == "run_finished" else None,
        "started_at": rfc3339(run.started_at or None),
        "ended_at": rfc3339(run.ended_at),
    }
    if step is not None:
        data.update(
            step=step.name,
            attempt=step.attempts,
            status=step.status,
            exit_code=step.exit_code,
            duration=None if name == "step_started" else _round(step.duration),
            started_at=rfc3339(step.started_at),
            ended_at=None if name == "step_started" else rfc3339(step.ended_at),
        )
        if step.signal:
            data["signal"] = step.signal
        if step.message:
            data["message"] = step.message
    data.update(extra)
    return data


def event_line(data: dict[str, Any]) -> bytes:
    return (json.dumps(data, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


def log_crash(run: RunRecord, ended: list[StepRecord], workflow: Workflow,
              enabled: set[str]) -> None:
    """A crash found after the fact (`status`, `history`, `resume` marked the run
    `crashed`): the rows ending its killed steps and the run, in the CSV and JSON Lines
    logs, as the runner would have written them (LOG-1; the exported script writes its
    `crashed` row too). `enabled`: which of "csv", "jsonl" have their plugin loaded."""
    how = (f"run {run.run_id} ended without its runner (pid {run.pid} on {run.host or '?'}); "
           "its steps are interrupted")
    csv_at = resolve(workflow.monitor.csv, CSV_DEFAULT, workflow) if "csv" in enabled else None
    if csv_at is not None:
        rows = b"".join([*(csv_record(run, s.name, s.status, step_summary(s)) for s in ended),
                         csv_record(run, RUN_STEP, run.status, how)])
        try:
            append_locked(csv_at, rows, header=csv_row(*CSV_COLUMNS))
        except OSError as exc:
            warn(f"CSV log {csv_at}: {exc.strerror or exc}; the crash of run {run.run_id} "
                 "is not logged there")
        finally:
            release(csv_at)
    jsonl_at = (resolve(workflow.monitor.jsonl, EVENTS_DEFAULT, workflow)
                if "jsonl" in enabled else None)
    if jsonl_at is not None:
        lines = b"".join([*(event_line(event("step_finished", run, s)) for s in ended),
                          event_line(event("run_finished", run, message=how))])
        try:
            append_locked(jsonl_at, lines)
        except OSError as exc:
            warn(f"JSON event log {jsonl_at}: {exc.strerror or exc}; the crash of run "
                 f"{run.run_id} is not logged there")
        finally:
            release(jsonl_at)


EVENTS_DEFAULT = "logs/events.jsonl"  # the JSON Lines event log, under $FLOWSH_HOME


def events_path(workflow: Workflow | None) -> Path:
    """Where a workflow's JSON Lines events go (`monitor.jsonl`); the default log when
    there is no workflow or it writes none."""
    path = resolve(workflow.monitor.jsonl, EVENTS_DEFAULT, workflow) if workflow else None
    return path or flowsh_home() / EVENTS_DEFAULT


def read_events(path: Path, run_id: str) -> list[dict[str, Any]]:
    """The events of one run, in file order; unreadable lines are skipped."""
    out: list[dict[str, Any]] = []
    needle = json.dumps(run_id)
    try:
        with path.open(encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if needle not in line:  # cheap pre-filter: the log holds every run
                    continue
                try:
                    data = json.loads(line)
                except ValueError:
                    continue
                if isinstance(data, dict) and data.get("run_id") == run_id:
                    out.append(data)
    except OSError:
        return []
    return out
