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
from flowsh.errors import StateError
from flowsh.state import ensure_private_dir, flowsh_home

if TYPE_CHECKING:
    from flowsh.model import Workflow


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


def atomic_write(path: Path, text: str, mode: int = 0o600) -> None:
    """`flowsh.fileio.atomic_write`, creating the directory first."""
    make_parent(path)
    fileio.atomic_write(path, text, mode)


def attempts_allowed(workflow: Workflow, step: str) -> int | None:
    try:
        return workflow.step(step).retry_count + 1
    except KeyError:
        return None


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
