"""Run and step records, and the interface every state backend implements.

A backend is chosen by URL (`sqlite:///path`, `json:///dir`, plugins add more). The engine
writes every transition through it before it starts anything that depends on that
transition, so a crash loses nothing a run had recorded.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import stat
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from flowsh.errors import StateError


class Status(StrEnum):
    """A run's or a step's status, stored as its value.

    A run is `running`, then succeeded, failed, interrupted or crashed (a `running` record
    whose runner is dead reads back as crashed). A step is pending, running or retrying,
    then succeeded, failed, skipped or interrupted.
    """

    PENDING = "pending"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    INTERRUPTED = "interrupted"
    CRASHED = "crashed"


class SkipReason(StrEnum):
    """Why a step was skipped. Its dependents run after the first two (docs/semantics.md
    IF-1, CODE-2) and after up-to-date (UPTODATE); after the others they are skipped too."""

    CONDITION = "condition"  # its `if` test exited 1
    EXIT_CODE = "exit-code"  # it exited with a code of its `skip_on`
    UPSTREAM = "upstream"  # a step it needs failed, or was skipped so
    RUN_FAILED = "run-failed"  # another step failed first (FAIL-2)
    NOT_REACHED = "not-reached"  # the run ended before it could start
    # Left out of a selection (`--only`, `--from`, `--until`): a pass-through, whose
    # dependents wait for and depend on its own dependencies (docs/semantics.md SELECT-2).
    NOT_SELECTED = "not-selected"
    UP_TO_DATE = "up-to-date"  # its inputs and generated files are as its last success left them


# An item that names its instance as it is (FOREACH-4); anything else names it by index.
ITEM_TOKEN = re.compile(r"[A-Za-z0-9._-]{1,64}\Z")


def instance_names(step: str, items: list[str]) -> list[str]:
    """`step[item]` for every item when all are short safe tokens and none repeats;
    otherwise `step[INDEX]` (0-based) for every item: one rule per list, so names never
    collide and never carry text a terminal or a file name would mangle (FOREACH-4)."""
    if all(ITEM_TOKEN.match(i) for i in items) and len(set(items)) == len(items):
        return [f"{step}[{i}]" for i in items]
    return [f"{step}[{n}]" for n in range(len(items))]


def instance_parent(name: str) -> str | None:
    """A `foreach` instance's step (`sync` of `sync[eu]`); None for a step's own record.
    Step names never hold '[' (docs/semantics.md FOREACH-4)."""
    head, bracket, _ = name.partition("[")
    return head if bracket else None


def display_order(run: RunRecord) -> list[str]:
    """Record names as status, the live view and the report show them: steps in file
    order, each followed by its foreach instances in item order."""
    names, order = list(run.steps), run.step_names
    items: dict[str, list[str]] = {}
    own: list[str] = []
    for name in names:
        parent = instance_parent(name)
        if parent is None:
            own.append(name)
        else:
            items.setdefault(parent, []).append(name)
    steps = [n for n in (order or own) if n in own] + [n for n in own if n not in (order or own)]
    out: list[str] = []
    for name in steps:
        out.append(name)
        listed = run.steps[name].items or []
        rank = {inst: i for i, inst in enumerate(instance_names(name, listed))}
        out.extend(sorted(items.pop(name, ()), key=lambda n, r=rank: (r.get(n, len(r)), n)))
    for rest in items.values():  # instances whose step is gone from the record
        out.extend(rest)
    return out


DEPENDENTS_RUN = frozenset({SkipReason.CONDITION, SkipReason.EXIT_CODE, SkipReason.UP_TO_DATE})


PENDING, RUNNING, RETRYING = Status.PENDING, Status.RUNNING, Status.RETRYING
SUCCEEDED, FAILED, SKIPPED = Status.SUCCEEDED, Status.FAILED, Status.SKIPPED
INTERRUPTED, CRASHED = Status.INTERRUPTED, Status.CRASHED
RUN_STATUSES = frozenset({RUNNING, SUCCEEDED, FAILED, INTERRUPTED, CRASHED})
STEP_STATUSES = frozenset({PENDING, RUNNING, RETRYING, SUCCEEDED, FAILED, SKIPPED, INTERRUPTED})
FINISHED_RUN = RUN_STATUSES - {RUNNING}


class NoSpaceError(StateError):
    """A write the store refused for lack of space (ENOSPC, SQLite's "disk is full").

    Its own class so that readers (`status`, `history`) can still answer on a full disk,
    when an operator needs them most, instead of failing on the `crashed` they would record.
    """


@dataclass
class StepRecord:
    name: str
    status: Status = PENDING
    attempts: int = 0
    exit_code: int | None = None
    signal: int | None = None
    started_at: float | None = None
    ended_at: float | None = None
    outputs: dict[str, str] = field(default_factory=dict)
    log_path: str | None = None
    message: str | None = None  # why it failed or was skipped, one line
    pid: int | None = None  # its process group on the runner's host, while it runs
    skip_reason: SkipReason | None = None  # when skipped

    @property
    def lets_dependents_run(self) -> bool:
        """Succeeded, or skipped for a reason its dependents need not care about. A record
        written before skip reasons were kept says `condition false` in its message."""
        if self.status == SUCCEEDED:
            return True
        if self.status != SKIPPED:
            return False
        if self.skip_reason is None:
            return self.message == "condition false"
        return self.skip_reason in DEPENDENTS_RUN
    # A remote attempt (a Celery task): its id, where it was sent, which worker took it and
    # when it was submitted; started_at is then when the worker started it.
    task_id: str | None = None
    queue: str | None = None
    worker: str | None = None
    queued_at: float | None = None
    # A `call:` step: the run id of its child run (docs/semantics.md CALL).
    child_run: str | None = None
    # A step with `sources:` (flowsh/uptodate.py): the hash of its inputs, and each input's
    # and generated file's hash ("src:PATH", "gen:PATH", "var:NAME"...), never a value.
    fingerprint: str | None = None
    hashes: dict[str, str] = field(default_factory=dict)
    # A `foreach` step: its items as expanded when it became ready; a resume runs the same
    # ones (docs/semantics.md FOREACH-3). None until expanded.
    items: list[str] | None = None

    @property
    def queue_wait(self) -> float | None:
        """Seconds the attempt waited for a worker (None for a local step)."""
        if self.queued_at is None:
            return None
        return (self.started_at or self.ended_at or _now()) - self.queued_at

    @property
    def duration(self) -> float | None:
        if self.started_at is None:
            return None
        return (self.ended_at or _now()) - self.started_at

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StepRecord:
        """Raises ValueError naming the first field of the wrong type."""
        if not isinstance(data, dict):
            raise ValueError(f"a step record is {type(data).__name__}, not an object")
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        _check(known, _STEP_TYPES, f"step {known.get('name')!r}: ")
        if "status" in known:
            known["status"] = Status(known["status"])
        if known.get("skip_reason") is not None:
            known["skip_reason"] = SkipReason(known["skip_reason"])
        return cls(**known)


@dataclass
class RunRecord:
    run_id: str
    workflow: str
    file: str | None
    definition_hash: str
    params: dict[str, str]  # secrets already masked
    status: Status = RUNNING
    pid: int | None = None
    host: str | None = None
    started_at: float = 0.0
    ended_at: float | None = None
    heartbeat: float | None = None
    exit_code: int | None = None
    steps: dict[str, StepRecord] = field(default_factory=dict)
    # Step names in file order when the run started (to refuse resumes of a changed file).
    step_names: list[str] = field(default_factory=list)
    resumed_from: str | None = None
    # The slot a scheduled run stands for (RFC 3339 with its offset, docs/semantics.md
    # SLOT-*); None for a run no schedule started and no --scheduled-time named.
    scheduled_time: str | None = None
    # A child run (a `call:` step's): the run and the step that called it.
    parent_run: str | None = None
    parent_step: str | None = None

    @property
    def duration(self) -> float | None:
        return (self.ended_at or _now()) - self.started_at if self.started_at else None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["steps"] = {n: s.to_dict() for n, s in self.steps.items()}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunRecord:
        """Raises ValueError naming the first field of the wrong type (a record edited by
        hand or by another program must not turn into a TypeError far from here)."""
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data and k != "steps"}
        _check(known, _RUN_TYPES, "")
        for required in ("run_id", "workflow", "params"):
            if required not in known:
                raise ValueError(f"no {required!r}")
        if "status" in known:
            known["status"] = Status(known["status"])
        run = cls(**known)
        steps = data.get("steps") or {}
        if not isinstance(steps, dict):
            raise ValueError("'steps' is not an object")
        run.steps = {n: StepRecord.from_dict(s) for n, s in steps.items()}
        return run


# The JSON type each field must have when read back: "str", "strmap" (object of strings),
# "strlist", or one of the number kinds below; a trailing "?" allows null.
_RUN_TYPES = {
    "run_id": "str", "workflow": "str", "file": "str?", "definition_hash": "str?",
    "params": "strmap", "status": "run status", "pid": "pid?", "host": "str?",
    "started_at": "time", "ended_at": "time?", "heartbeat": "time?", "exit_code": "code?",
    "step_names": "strlist", "resumed_from": "str?", "scheduled_time": "str?",
    "parent_run": "str?", "parent_step": "str?",
}
_STEP_TYPES = {
    "name": "str", "status": "step status", "attempts": "count", "exit_code": "code?",
    "signal": "count?", "started_at": "time?", "ended_at": "time?", "outputs": "strmap",
    "log_path": "str?", "message": "str?", "pid": "pid?", "skip_reason": "skip reason?",
    "task_id": "str?", "queue": "str?", "worker": "str?", "queued_at": "time?",
    "child_run": "str?",
    "fingerprint": "str?", "hashes": "strmap", "items": "strlist?",
}
# Numbers are checked for range as well as type: JSON takes NaN, Infinity and 1e300, SQLite
# takes any 64-bit integer, and each of those turned into a traceback far from here
# (localtime's OverflowError, a division by a zero-width timeline, os.killpg's overflow).
# Times: Unix seconds from 1970 to the end of year 9999 (what time.localtime and the
# report's RFC 3339 stamps can show). Other numbers: whatever fits a C int.
_STATUSES: dict[str, frozenset[str]] = {
    "run status": RUN_STATUSES, "step status": STEP_STATUSES,
    "skip reason": frozenset(SkipReason),
}
MAX_TIME = 253402300799.0
_INT_MAX = 2**31 - 1
_NUMBER_KINDS = {
    "time": ("a Unix time between 1970 and 9999", 0.0, MAX_TIME),
    "code": ("exit code", -_INT_MAX, _INT_MAX),
    "count": ("count (0 or more)", 0, _INT_MAX),
    "pid": ("process id (1 or more)", 1, _INT_MAX),
}


def _type_ok(value: Any, kind: str) -> bool:
    if kind.endswith("?"):
        if value is None:
            return True
        kind = kind[:-1]
    if kind == "str":
        return isinstance(value, str)
    if kind in _STATUSES:
        return value in _STATUSES[kind]
    if kind in _NUMBER_KINDS:
        _, low, high = _NUMBER_KINDS[kind]
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if kind != "time" and not isinstance(value, int):
            return False
        # NaN fails both comparisons; infinities and huge values fail one.
        return bool(low <= value <= high)
    if kind == "strmap":
        return isinstance(value, dict) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items())
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _check(data: dict[str, Any], types: dict[str, str], where: str) -> None:
    for key, value in data.items():
        kind = types.get(key)
        if kind is not None and not _type_ok(value, kind):
            base = kind.rstrip("?")
            what = _NUMBER_KINDS[base][0] if base in _NUMBER_KINDS else (
                f"{base} ({', '.join(sorted(_STATUSES[base]))})" if base in _STATUSES
                else f"valid {base}")
            raise ValueError(f"{where}field {key!r} is {json_type(value)} {value!r:.40}, "
                             f"which is not {_article(what)}")


def _article(what: str) -> str:
    return what if what.startswith("a ") else f"an {what}" if what[0] in "aeiou" else f"a {what}"


def json_type(value: Any) -> str:
    return {bool: "boolean", int: "number", float: "number", str: "string", list: "array",
            dict: "object", type(None): "null"}.get(type(value), type(value).__name__)


class StateBackend(Protocol):
    """What the engine and the commands need from a state store.

    Implementations must make each call atomic: after it returns, the change survives a
    crash of this process; if it raises, the store holds what it held before.
    Errors are raised as `flowsh.errors.StateError` (or `NotFoundError` for unknown ids).
    """

    url: str

    def create_run(self, run: RunRecord) -> None: ...

    def update_run(self, run: RunRecord) -> None:
        """Write the run's own fields (status, times, exit code), not its steps."""

    def save_step(self, run: RunRecord, step: StepRecord) -> None:
        """Write one step's record."""

    def heartbeat(self, run: RunRecord) -> None: ...

    def load_run(self, run_id: str) -> RunRecord:
        """A run by id or unique id prefix; NotFoundError otherwise."""

    def list_runs(
        self, workflow: str | None = None, *, limit: int | None = None,
        statuses: frozenset[str] | None = None,
    ) -> list[RunRecord]:
        """Newest first, without step records (cheap enough for `history`)."""

    def delete_runs(self, run_ids: list[str]) -> int: ...

    def close(self) -> None: ...


def _now() -> float:
    import time

    return time.time()


def flowsh_home() -> Path:
    """`$FLOWSH_HOME`, else `$XDG_STATE_HOME/flowsh`, else `~/.local/state/flowsh`."""
    # Asked for several times per step (logs, metrics): cached on the variables it reads.
    return _home(os.environ.get("FLOWSH_HOME"), os.environ.get("XDG_STATE_HOME"))


@functools.lru_cache(maxsize=8)
def _home(home: str | None, xdg: str | None) -> Path:
    if home:
        return Path(home).expanduser()
    return Path(xdg or os.path.expanduser("~/.local/state")) / "flowsh"


def ensure_private_dir(path: Path) -> Path:
    """Create `path` (and missing parents) as 0700; flowsh's files hold logs and params.

    Under `$FLOWSH_HOME` no component may be a symbolic link (a `runs` pointing elsewhere
    would have flowsh write logs and secrets wherever it points).
    """
    home = flowsh_home()
    missing: list[Path] = []
    cur = path
    while True:
        try:
            st = os.lstat(cur)
        except FileNotFoundError:
            missing.append(cur)
            if cur.parent == cur:
                break
            cur = cur.parent
            continue
        except OSError as exc:
            raise StateError(f"{cur}: cannot use directory: {exc.strerror}") from None
        if stat.S_ISLNK(st.st_mode) and cur != home and cur.is_relative_to(home):
            raise StateError(f"{cur}: is a symbolic link; flowsh does not follow links "
                             "under its state directory (O_NOFOLLOW)")
        if cur == home or not cur.is_relative_to(home):
            break
        if stat.S_ISDIR(st.st_mode) and st.st_mode & 0o077 and st.st_uid == os.getuid():
            # Made by an older flowsh (runs/ was 0755): tighten it as documented.
            with contextlib.suppress(OSError):
                os.chmod(cur, 0o700)
        cur = cur.parent
    try:
        for d in reversed(missing):
            try:
                d.mkdir(mode=0o700)
            except FileExistsError:
                continue
            os.chmod(d, 0o700)  # whatever the umask
    except PermissionError:
        raise StateError(f"{path}: permission denied (cannot create the state directory)") from None
    except OSError as exc:
        raise StateError(f"{path}: cannot create directory: {exc.strerror}") from None
    if not path.is_dir():
        raise StateError(f"{path}: not a directory")
    return path


def default_state_url() -> str:
    return f"sqlite:///{flowsh_home() / 'flowsh.db'}"
