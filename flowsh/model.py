"""The workflow model: what a workflow file means, validated and immutable.

Loaders (YAML, TOML, seed-style bash) turn a file into plain data; `Workflow.model_validate`
checks it. After validation every step carries its effective settings (defaults applied,
the implicit chain turned into `needs`), so nothing downstream looks at `defaults` again.

Plain classes, without pydantic: importing pydantic and building its models cost ~130 ms
of every `flowsh run` and `validate` (issue 14). `flowsh.modelcheck` holds the same model
as pydantic classes, and it stays the contract: `model_validate` here accepts only data
it can vouch for field by field (the shapes a file gives: text, numbers, booleans, lists,
mappings) and gives what pydantic would; anything else, every invalid file included, is
validated by pydantic and the result converted. So every refusal, its wording and its
position are pydantic's, as before. The rest of pydantic's surface that callers use
(`model_copy`, `model_dump`, `model_dump_json`, `model_fields`...) is here too, natively
where a run needs it, through the pydantic twin otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Set as AbstractSet
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

from flowsh.durations import parse_duration
from flowsh.modelrules import BASH_SETS as BASH_SETS
from flowsh.modelrules import IDENT as IDENT
from flowsh.modelrules import (
    MAX_CONCURRENCY,
    MAX_POOL_SIZE,
    MAX_RETRIES,
    check_globs,
    check_idents,
    str_value,
)
from flowsh.modelrules import MAX_ITEMS as MAX_ITEMS
from flowsh.modelrules import MAX_STEP_NAME as MAX_STEP_NAME
from flowsh.modelrules import STEP_NAME as STEP_NAME
from flowsh.modelrules import EventName as EventName
from flowsh.modelrules import Severity as Severity
from flowsh.secrets import SECRET_NAME as SECRET_NAME  # kept importable from here

if TYPE_CHECKING:
    from pydantic import BaseModel


_M = TypeVar("_M", bound="_Model")


_FIELDS_SETS: dict[frozenset[str], frozenset[str]] = {}


class _Slow(Exception):
    """The fast path cannot vouch for a value: pydantic decides."""


class _Meta(type):
    def __getattr__(cls, name: str) -> Any:
        # Class-level pydantic API (model_fields, model_json_schema...): the twin's.
        if name.startswith("model_"):
            return getattr(_checked(cls), name)
        raise AttributeError(name)


class _Model(metaclass=_Meta):
    """A frozen record with pydantic's API over the fields of its `flowsh.modelcheck` twin."""

    _fields: ClassVar[tuple[str, ...]] = ()  # declaration order, as the twin's
    _excluded: ClassVar[frozenset[str]] = frozenset()  # `Field(exclude=True)`
    _alias: ClassVar[dict[str, str]] = {}

    if TYPE_CHECKING:
        model_fields: ClassVar[dict[str, Any]]

    def __init__(self, **data: Any) -> None:
        made = type(self).model_validate(data)
        object.__setattr__(self, "__dict__", made.__dict__)

    @classmethod
    def _make(cls: type[_M], values: dict[str, Any], fields_set: AbstractSet[str]) -> _M:
        obj = object.__new__(cls)
        # One frozenset per distinct set of keys, shared: a set of 6-10 names is 728
        # bytes, a third of a step (7 MiB of a 10,000-step file's model).
        frozen = frozenset(fields_set)
        values["_fset"] = _FIELDS_SETS.setdefault(frozen, frozen)
        object.__setattr__(obj, "__dict__", values)  # the caller's fresh dict, as it is
        return obj

    @classmethod
    def _fast(cls, data: dict[str, Any]) -> Any:
        raise _Slow

    @classmethod
    def model_validate(cls: type[_M], obj: Any, **kwargs: Any) -> _M:
        if not kwargs:
            if isinstance(obj, cls):
                return obj  # pydantic's default: an instance is not validated again
            if type(obj) is dict:
                try:
                    made: _M = cls._fast(obj)
                    return made
                except _Slow:
                    pass
        checked: _M = _plain(_checked(cls).model_validate(_twin_value(obj), **kwargs))
        return checked

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(_twin(self), name, value)  # frozen: pydantic's ValidationError
        raise AttributeError(f"{type(self).__name__} is frozen")

    def __delattr__(self, name: str) -> None:
        delattr(_twin(self), name)
        raise AttributeError(f"{type(self).__name__} is frozen")

    def _values(self) -> tuple[Any, ...]:
        d = self.__dict__
        return tuple(d[f] for f in self._fields)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, _Model)
        return self._values() == other._values() and self._extra() == other._extra()

    def __hash__(self) -> int:
        return hash((type(self), self._values()))

    def __repr__(self) -> str:
        d = self.__dict__
        parts = [f"{f}={d[f]!r}" for f in self._fields]
        parts += [f"{k}={v!r}" for k, v in self._extra().items()]
        return f"{type(self).__name__}({', '.join(parts)})"

    def __iter__(self) -> Any:
        d = self.__dict__
        yield from ((f, d[f]) for f in self._fields)
        yield from self._extra().items()

    def _extra(self) -> dict[str, Any]:
        return {}

    @property
    def model_fields_set(self) -> set[str]:
        return set(self.__dict__["_fset"])

    def model_copy(self: _M, *, update: dict[str, Any] | None = None,
                   deep: bool = False) -> _M:
        """A copy sharing the values, `update` applied without validation (as pydantic)."""
        values = {**self.__dict__, **(update or {})}
        values.pop("_fset", None)
        values.pop("_step_index", None)
        if deep:
            import copy

            values = copy.deepcopy(values)
        return type(self)._make(values, self.model_fields_set | (update or {}).keys())

    def model_dump(self, **kwargs: Any) -> dict[str, Any]:
        if kwargs:
            dumped: dict[str, Any] = _twin(self).model_dump(**kwargs)
            return dumped
        d = self.__dict__
        out = {f: _dump_value(d[f]) for f in self._fields if f not in self._excluded}
        out.update({k: _dump_value(v) for k, v in self._extra().items()})
        return out

    def model_dump_json(self, **kwargs: Any) -> str:
        text: str = _twin(self).model_dump_json(**kwargs)
        return text


def _dump_value(value: Any) -> Any:
    if isinstance(value, _Model):
        return value.model_dump()
    if type(value) is list:
        return [_dump_value(v) for v in value]
    if type(value) is dict:
        return {k: _dump_value(v) for k, v in value.items()}
    return value


# -- checks of one value each: the value pydantic would give, or _Slow ----------------------


def _str(v: Any) -> str:
    if type(v) is not str:
        raise _Slow
    return v


def _opt_str(v: Any) -> str | None:
    if v is None:
        return None
    if type(v) is not str:
        raise _Slow
    return v


def _bool(v: Any) -> bool:
    if type(v) is not bool:
        raise _Slow
    return v


def _int(v: Any, lo: int, hi: int) -> int:
    if type(v) is not int or not lo <= v <= hi:
        raise _Slow
    return v


def _float(v: Any, lo: float, hi: float) -> float:
    if type(v) is not float and type(v) is not int:
        raise _Slow
    f = float(v)
    if not lo <= f <= hi:  # nan too
        raise _Slow
    return f


def _duration(v: Any) -> float:
    try:
        return parse_duration(v)
    except Exception:  # its message is pydantic's to give
        raise _Slow from None


def _opt_duration(v: Any) -> float | None:
    return None if v is None else _duration(v)


def _str_list(v: Any) -> list[str]:
    if type(v) is str:
        return [v]
    if type(v) is not list:
        raise _Slow
    for item in v:
        if type(item) is not str:
            raise _Slow
    return list(v)


def _scalar(v: Any) -> str:
    v = str_value(v)
    if type(v) is not str:
        raise _Slow
    return v


def _scalar_list(v: Any) -> list[str]:
    if type(v) is not list:
        raise _Slow
    return [_scalar(x) for x in v]


def _names(v: Any, what: str) -> dict[str, str]:
    """`env`/`params`: shell names -> text."""
    if type(v) is not dict:
        raise _Slow
    out = {}
    for k, x in v.items():
        if type(k) is not str:
            raise _Slow
        out[k] = _scalar(x)
    try:
        check_idents(out, what)
    except ValueError:
        raise _Slow from None
    return out


def _codes(v: Any, lo: int, hi: int) -> list[int]:
    if type(v) is not list:
        raise _Slow
    return [_int(x, lo, hi) for x in v]


def _literal(v: Any, allowed: frozenset[str]) -> str:
    if type(v) is not str or v not in allowed:
        raise _Slow
    return v


def _nonblank_shell(v: Any) -> str:
    if type(v) is not str or not v.strip():
        raise _Slow
    return v


def _keys(data: dict[str, Any], known: frozenset[str]) -> None:
    if not data.keys() <= known:
        raise _Slow  # an unknown key (or an alias pydantic takes by name): its error


def _nested(cls: type[_Model], v: Any) -> Any:
    if isinstance(v, cls):
        return v
    if type(v) is not dict:
        raise _Slow
    return cls._fast(v)


# -- the model ------------------------------------------------------------------------------


class Defaults(_Model):
    """Settings every step inherits unless it sets its own."""

    retries: int
    retry_delay: float
    backoff: float
    max_delay: float
    jitter: float
    timeout: float | None

    _fields = ("retries", "retry_delay", "backoff", "max_delay", "jitter", "timeout")
    _known = frozenset(_fields)

    @classmethod
    def _fast(cls, d: dict[str, Any]) -> Defaults:
        _keys(d, cls._known)
        g = d.get
        return cls._make({
            "retries": _int(g("retries", 0), 0, MAX_RETRIES),
            "retry_delay": _duration(d["retry_delay"]) if "retry_delay" in d else 1.0,
            "backoff": _float(g("backoff", 2.0), 1.0, 100.0),
            "max_delay": _duration(d["max_delay"]) if "max_delay" in d else 300.0,
            "jitter": _float(g("jitter", 0.1), 0.0, 1.0),
            "timeout": _opt_duration(g("timeout")),
        }, set(d))


class ForeachFile(_Model):
    """`foreach: {file: PATH}`: the file's lines (relative to the step's workdir)."""

    file: str
    _fields = ("file",)


class ForeachCommand(_Model):
    """`foreach: {command: TEXT}`: the lines a command prints, run in the step's environment."""

    command: str
    _fields = ("command",)


class ForeachOutput(_Model):
    """`foreach: {output: NAME}`: the lines of an upstream output (or env var) NAME."""

    output: str
    _fields = ("output",)


Foreach = list[str] | ForeachFile | ForeachCommand | ForeachOutput


def _foreach(v: Any) -> Foreach | None:
    if v is None or isinstance(v, ForeachFile | ForeachCommand | ForeachOutput):
        return v  # type: ignore[no-any-return]
    if type(v) is list:
        items = _scalar_list(v)
        if len(items) > MAX_ITEMS:
            raise _Slow
        for item in items:
            if "\0" in item or "\n" in item or not item.strip():
                raise _Slow
        return items
    if type(v) is not dict or len(v) != 1:
        raise _Slow
    ((key, value),) = v.items()
    if type(value) is not str or not value:
        raise _Slow
    if key == "file":
        return ForeachFile._make({"file": value}, {"file"})  # type: ignore[no-any-return]
    if key == "command":
        return ForeachCommand._make(  # type: ignore[no-any-return]
            {"command": value}, {"command"})
    if key == "output" and IDENT.match(value) and not SECRET_NAME.search(value):
        return ForeachOutput._make({"output": value}, {"output"})  # type: ignore[no-any-return]
    raise _Slow


_QUEUE_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:@-")
_POOL_FIRST = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")
_POOL_CHARS = _POOL_FIRST | frozenset(".-")


def _pool_name(v: Any) -> str:
    if type(v) is not str or not 1 <= len(v) <= 64 or v[0] not in _POOL_FIRST \
            or not _POOL_CHARS.issuperset(v):
        raise _Slow
    return v


class Step(_Model):
    """One step: a shell command (`run`) or a script file (`script` + `args`)."""

    name: str
    description: str | None
    run: str | None
    script: str | None
    args: list[str]
    needs: list[str] | None
    env: dict[str, str]
    workdir: str | None
    source: list[str]
    shell: str | None
    retries: int | None
    retry_delay: float | None
    backoff: float | None
    max_delay: float | None
    jitter: float | None
    timeout: float | None
    if_: str | None
    always: bool
    continue_on_failure: bool
    keep_children: bool
    retry_on: list[int] | None
    skip_on: list[int]
    success_on: list[int]
    queue: str | None
    queue_timeout: float | None
    pool: str | None
    call: str | None
    params: dict[str, str]
    foreach: Foreach | None
    max_parallel: int | None
    sources: list[str]
    generates: list[str]

    _fields = (
        "name", "description", "run", "script", "args", "needs", "env", "workdir", "source",
        "shell", "retries", "retry_delay", "backoff", "max_delay", "jitter", "timeout", "if_",
        "always", "continue_on_failure", "keep_children", "retry_on", "skip_on", "success_on",
        "queue", "queue_timeout", "pool", "call", "params", "foreach", "max_parallel",
        "sources", "generates",
    )
    _alias = {"if_": "if"}
    _known = frozenset(_fields) - {"if_"} | {"if"}

    @property
    def retry_count(self) -> int:
        return self.retries or 0

    @classmethod
    def _fast(cls, d: dict[str, Any], inherit: tuple[dict[str, Any], str, str | None]
              | None = None) -> Step:
        """The step, or _Slow; with `inherit` (the workflow's defaults, its shell and the
        previous step's name), resolved as the twin's `Workflow._resolve` resolves it."""
        if not d.keys() <= cls._known or "name" not in d:
            raise _Slow  # an unknown key (or `if_`, which pydantic takes by name): its error
        v = dict(_STEP_BLANK)
        v["args"], v["env"], v["source"], v["params"] = [], {}, [], {}
        v["skip_on"], v["success_on"], v["sources"], v["generates"] = [], [], [], []
        checks = _STEP_CHECKS
        for key, value in d.items():
            v[key] = checks[key](value)
        fields_set = set(d)
        if "if" in v:
            v["if_"] = v.pop("if")
            fields_set.discard("if")
            fields_set.add("if_")
        call, foreach = v["call"], v["foreach"]
        if (v["run"], v["script"], call).count(None) != 2 \
                or (v["params"] and call is None) or (v["args"] and v["script"] is None):
            raise _Slow
        if foreach is None:
            if v["max_parallel"] is not None:
                raise _Slow
        elif call or v["sources"]:
            raise _Slow
        retry_on, skip_on, success_on = v["retry_on"], v["skip_on"], v["success_on"]
        if (success_on and (skip_on or retry_on)) or (retry_on and skip_on):
            for a, b in ((success_on, skip_on), (retry_on, success_on), (retry_on, skip_on)):
                if set(a or ()) & set(b or ()):
                    raise _Slow
        if inherit is not None:
            defaults, shell, previous = inherit
            for key in _INHERITED:
                if v[key] is None:
                    v[key] = defaults[key]
                    fields_set.add(key)
            if v["needs"] is None:
                v["needs"] = [previous] if previous is not None else []
                fields_set.add("needs")
            if v["shell"] is None:
                v["shell"] = shell
                fields_set.add("shell")
        return cls._make(v, fields_set)


def _step_name(v: Any) -> str:
    if type(v) is not str or not STEP_NAME.match(v) or len(v) > MAX_STEP_NAME:
        raise _Slow
    return v


def _opt(check: Any, *args: Any) -> Any:
    """`check` for a value that may also be None."""
    def opt(v: Any) -> Any:
        return None if v is None else check(v, *args)
    return opt


def _nonempty_str(v: Any) -> str:
    if type(v) is not str or not v:
        raise _Slow
    return v


def _queue(v: Any) -> str:
    if type(v) is not str or not 1 <= len(v) <= 200 or not _QUEUE_CHARS.issuperset(v):
        raise _Slow
    return v


def _positive_duration(v: Any) -> float:
    seconds = _duration(v)
    if seconds <= 0:
        raise _Slow
    return seconds


def _globs(v: Any) -> list[str]:
    globs = _str_list(v)
    try:
        return check_globs(globs)
    except ValueError:
        raise _Slow from None


_STEP_CHECKS: dict[str, Any] = {
    "name": _step_name, "description": _opt_str, "run": _opt_str, "script": _opt_str,
    "args": _scalar_list, "needs": _opt(_str_list), "env": lambda v: _names(v, "env"),
    "workdir": _opt_str, "source": _str_list, "shell": _opt(_nonblank_shell),
    "retries": _opt(_int, 0, MAX_RETRIES), "retry_delay": _opt_duration,
    "backoff": _opt(_float, 1.0, 100.0), "max_delay": _opt_duration,
    "jitter": _opt(_float, 0.0, 1.0), "timeout": _opt_duration, "if": _opt_str,
    "always": _bool, "continue_on_failure": _bool, "keep_children": _bool,
    "retry_on": _opt(_codes, 1, 255), "skip_on": lambda v: _codes(v, 1, 123),
    "success_on": lambda v: _codes(v, 1, 123), "queue": _opt(_queue),
    "queue_timeout": _opt(_positive_duration), "pool": _opt(_pool_name),
    "call": _opt(_nonempty_str), "params": lambda v: _names(v, "param"),
    "foreach": _foreach, "max_parallel": _opt(_int, 1, MAX_ITEMS), "sources": _globs,
    "generates": _globs,
}
# A step's values before its keys are read (lists and mappings are made for each step).
_STEP_BLANK: dict[str, Any] = dict.fromkeys(Step._fields)
_STEP_BLANK.update(always=False, continue_on_failure=False, keep_children=False)
_INHERITED = ("retries", "retry_delay", "backoff", "max_delay", "jitter", "timeout")


class Channel(_Model):
    """A notification channel: `type` names a notifier; other keys are its config."""

    type: str
    _fields = ("type",)

    def _extra(self) -> dict[str, Any]:
        extra: dict[str, Any] = self.__dict__["_xtra"]
        return extra

    def __getattr__(self, name: str) -> Any:
        # Only for names missing from __dict__: pydantic's extras read as attributes.
        extra = self.__dict__.get("_xtra") or {}
        if name in extra:
            return extra[name]
        raise AttributeError(name)

    def model_copy(self: _M, *, update: dict[str, Any] | None = None,
                   deep: bool = False) -> _M:
        copied: _M = _plain(_twin(self).model_copy(update=update, deep=deep))
        return copied

    @classmethod
    def _fast(cls, d: dict[str, Any]) -> Channel:
        extra = {k: v for k, v in d.items() if k != "type"}
        if any(type(k) is not str for k in extra):
            raise _Slow
        ch: Channel = cls._make({"type": _str(d.get("type"))}, set(d))
        ch.__dict__["_xtra"] = extra
        return ch


_SEVERITIES = frozenset(("critical", "warning", "info"))
_EVENTS = frozenset(("run_failed", "run_succeeded", "step_failed", "step_retry", "run_long",
                     "run_late"))


class Notify(_Model):
    """The seed's `alert()`: channels, severity routes, and which events alert at what level."""

    channels: dict[str, Channel]
    routes: dict[Severity, list[str]]
    events: dict[EventName, Severity]
    long_after: float | None

    _fields = ("channels", "routes", "events", "long_after")
    _known = frozenset(_fields)

    @classmethod
    def _fast(cls, d: dict[str, Any]) -> Notify:
        _keys(d, cls._known)
        channels, routes, events = d.get("channels", {}), d.get("routes", {}), \
            d.get("events", {})
        if type(channels) is not dict or type(routes) is not dict or type(events) is not dict:
            raise _Slow
        return cls._make({
            "channels": {_str(k): _nested(Channel, v) for k, v in channels.items()},
            "routes": {_literal(k, _SEVERITIES): _str_list(v) for k, v in routes.items()},
            "events": {_literal(k, _EVENTS): _literal(v, _SEVERITIES)
                       for k, v in events.items()},
            "long_after": _opt_duration(d.get("long_after")),
        }, set(d))


def _bool_or_str(v: Any) -> bool | str:
    if type(v) is not bool and type(v) is not str:
        raise _Slow
    return v  # type: ignore[no-any-return]


class Monitor(_Model):
    """Logs and metrics written by the built-in monitoring plugins."""

    csv: bool | str
    jsonl: bool | str
    prometheus: bool | str
    push: str | None

    _fields = ("csv", "jsonl", "prometheus", "push")
    _known = frozenset(_fields)

    @classmethod
    def _fast(cls, d: dict[str, Any]) -> Monitor:
        _keys(d, cls._known)
        g = d.get
        return cls._make({
            "csv": _bool_or_str(g("csv", True)),
            "jsonl": _bool_or_str(g("jsonl", True)),
            "prometheus": _bool_or_str(g("prometheus", False)),
            "push": _opt_str(g("push")),
        }, set(d))


class CatchUp(_Model):
    """Slots of the `schedule` missed in a window, run before a scheduled run's own."""

    window: float
    policy: Literal["latest", "all", "none"]

    _fields = ("window", "policy")
    _known = frozenset(_fields)

    @classmethod
    def _fast(cls, d: dict[str, Any]) -> CatchUp:
        _keys(d, cls._known)
        if "window" not in d:
            raise _Slow
        return cls._make({
            "window": _duration(d["window"]),
            "policy": _literal(d.get("policy", "latest"), frozenset(("latest", "all", "none"))),
        }, set(d))


_OVERLAP = frozenset(("skip", "wait", "allow"))


class Workflow(_Model):
    """A validated workflow. Build it with `flowsh.loader.load_workflow`."""

    name: str
    description: str | None
    params: dict[str, str]
    env: dict[str, str]
    env_file: str | None
    secrets: list[str]
    shell: str
    strict: bool
    workdir: str | None
    source: list[str]
    concurrency: int
    overlap: Literal["skip", "wait", "allow"]
    lock_timeout: float | None
    kill_grace: float
    state: str | None
    queue_timeout: float | None
    executor: str
    executor_options: dict[str, Any]
    defaults: Defaults
    steps: list[Step]
    notify: Notify
    monitor: Monitor
    pools: dict[str, int]
    schedule: list[str]
    catchup: CatchUp | None
    deadline: str | None
    # Set by the loader, not by the file.
    path: str | None
    # Params declared without a default (`day:` / `day: null`): taken out of `params`,
    # so `params` keeps only names with a value.
    required_params: tuple[str, ...]
    # False when the file has no `name:` (the loader then names it after the file): see
    # `identity`.
    name_declared: bool

    _fields = (
        "name", "description", "params", "env", "env_file", "secrets", "shell", "strict",
        "workdir", "source", "concurrency", "overlap", "lock_timeout", "kill_grace", "state",
        "queue_timeout", "executor", "executor_options", "defaults", "steps", "notify",
        "monitor", "pools", "schedule", "catchup", "deadline", "path", "required_params",
        "name_declared",
    )
    _excluded = frozenset(("path", "required_params", "name_declared"))
    _known = frozenset(_fields)

    @classmethod
    def _fast(cls, d: dict[str, Any]) -> Workflow:
        _keys(d, cls._known)
        g = d.get
        fields_set = set(d)
        params = g("params")
        required: Any = g("required_params", ())
        if type(params) is dict and any(v is None for v in params.values()):
            # `day:` declares a required param (the twin's `_split_params`).
            required = tuple(k for k, v in params.items() if v is None)
            params = {k: v for k, v in params.items() if v is not None}
            fields_set.add("required_params")
        if type(required) not in (tuple, list):
            raise _Slow
        required = tuple(_str(r) for r in required)
        try:
            check_idents(dict.fromkeys(required, ""), "param")
        except ValueError:
            raise _Slow from None
        name = _str(g("name"))
        if not STEP_NAME.match(name) or len(name) > MAX_STEP_NAME:
            raise _Slow
        steps = g("steps")
        if type(steps) is not list or not steps:
            raise _Slow
        queue_timeout = _opt_duration(g("queue_timeout"))
        if queue_timeout is not None and queue_timeout <= 0:
            raise _Slow
        options = g("executor_options", {})
        if type(options) is not dict or any(type(k) is not str for k in options):
            raise _Slow
        pools = g("pools", {})
        if type(pools) is not dict:
            raise _Slow
        schedule = _str_list(g("schedule", []))
        if schedule:
            from flowsh.cron import check

            try:
                schedule = [check(s) for s in schedule]
            except Exception:
                raise _Slow from None
        catchup = g("catchup")
        if catchup is not None:
            catchup = _nested(CatchUp, catchup)
            if not schedule or catchup.window <= 0:
                raise _Slow
        deadline = _opt_str(g("deadline"))
        if deadline is not None:
            from flowsh.deadline import parse_deadline

            try:
                parse_deadline(deadline)
            except Exception:
                raise _Slow from None
        defaults = _nested(Defaults, d["defaults"]) if "defaults" in d \
            else Defaults._make(dict(_DEFAULTS), set())
        shell = _nonblank_shell(d["shell"]) if "shell" in d else "bash"
        resolved: list[Step] = []
        previous: str | None = None
        inherited = defaults.__dict__
        for s in steps:  # each with its effective settings (the twin's `_resolve`)
            if type(s) is dict:
                step = Step._fast(s, (inherited, shell, previous))
            elif isinstance(s, Step):
                step = _resolved(s, inherited, shell, previous)
            else:
                raise _Slow
            resolved.append(step)
            previous = step.name
        wf: Workflow = cls._make({
            "name": name,
            "description": _opt_str(g("description")),
            "params": _names(params, "param") if "params" in d else {},
            "env": _names(d["env"], "env") if "env" in d else {},
            "env_file": _opt_str(g("env_file")),
            "secrets": _str_list(d["secrets"]) if "secrets" in d else [],
            "shell": shell,
            "strict": _bool(d["strict"]) if "strict" in d else True,
            "workdir": _opt_str(g("workdir")),
            "source": _str_list(d["source"]) if "source" in d else [],
            "concurrency": _int(d["concurrency"], 1, MAX_CONCURRENCY)
            if "concurrency" in d else 4,
            "overlap": _literal(g("overlap", "skip"), _OVERLAP),
            "lock_timeout": _opt_duration(g("lock_timeout")),
            "kill_grace": _duration(d["kill_grace"]) if "kill_grace" in d else 5.0,
            "state": _opt_str(g("state")),
            "queue_timeout": queue_timeout,
            "executor": _str(d["executor"]) if "executor" in d else "local",
            "executor_options": dict(options),
            "defaults": defaults,
            "steps": resolved,
            "notify": _nested(Notify, d["notify"]) if "notify" in d
            else Notify._make({"channels": {}, "routes": {}, "events": {}, "long_after": None},
                              set()),
            "monitor": _nested(Monitor, d["monitor"]) if "monitor" in d
            else Monitor._make(dict(_MONITOR), set()),
            "pools": {_pool_name(k): _int(v, 1, MAX_POOL_SIZE) for k, v in pools.items()},
            "schedule": schedule,
            "catchup": catchup,
            "deadline": deadline,
            "path": _opt_str(g("path")),
            "required_params": required,
            "name_declared": _bool(d["name_declared"]) if "name_declared" in d else True,
        }, fields_set)
        return wf

    def step(self, name: str) -> Step:
        """The step called `name` (KeyError if none); O(1), plugins call it per event."""
        cached = self.__dict__.get("_step_index")
        # A cache on a frozen model, not a field; keyed on the list so a model_copy that
        # replaces `steps` never sees a stale index.
        if cached is None or cached[0] is not self.steps:
            cached = (self.steps, {s.name: s for s in self.steps})
            self.__dict__["_step_index"] = cached
        index: dict[str, Step] = cached[1]
        return index[name]

    @property
    def identity(self) -> str:
        """What the overlap lock, history, stats and resume key on (shared rule 7).

        A declared `name:` is the identity: files that declare the same name share them on
        purpose. Without one, the name is the file's stem and the identity adds 8 hex
        digits of the SHA-256 of the file's resolved path, `nightly-1a2b3c4d`, so two
        unrelated `nightly.yaml` never meet. The exported script names its files with it.
        """
        if self.name_declared or not self.path:
            return self.name
        from flowsh.digest import sha256

        digest = sha256(self.path.encode("utf-8", "surrogateescape")).hexdigest()
        return f"{self.name}-{digest[:8]}"

    def secret_names(self) -> set[str]:
        names = {n for n in (*self.params, *self.required_params, *self.env)
                 if SECRET_NAME.search(n)}
        return names | set(self.secrets)


_DEFAULTS = {"retries": 0, "retry_delay": 1.0, "backoff": 2.0, "max_delay": 300.0,
             "jitter": 0.1, "timeout": None}
_MONITOR = {"csv": True, "jsonl": True, "prometheus": False, "push": None}


def _resolved(step: Step, defaults: dict[str, Any], shell: str, previous: str | None) -> Step:
    """A step given as an instance, with its effective settings (as `Step._fast`)."""
    sd = step.__dict__
    updates: dict[str, Any] = {k: defaults[k] for k in _INHERITED if sd[k] is None}
    if sd["needs"] is None:
        updates["needs"] = [previous] if previous is not None else []
    if sd["shell"] is None:
        updates["shell"] = shell
    return _updated(step, updates) if updates else step


def _updated(step: Step, updates: dict[str, Any]) -> Step:
    """``step.model_copy(update=updates)`` without its generic work (10,000 steps)."""
    values = {**step.__dict__, **updates}
    values.pop("_step_index", None)
    return Step._make(values, step.__dict__["_fset"] | updates.keys())


# -- the pydantic twin ----------------------------------------------------------------------

_PLAIN: dict[str, type[_Model]] = {c.__name__: c for c in (
    Defaults, ForeachFile, ForeachCommand, ForeachOutput, Step, Channel, Notify, Monitor,
    CatchUp, Workflow)}


def _checked(cls: type) -> type[BaseModel]:
    """`cls`'s pydantic twin in flowsh.modelcheck (imported here, on first need)."""
    from flowsh import modelcheck

    twin: type[BaseModel] = getattr(modelcheck, cls.__name__)
    return twin


def _plain(obj: Any) -> Any:
    """A value validated by pydantic, its models turned into ours (sharing the values)."""
    from pydantic import BaseModel

    if isinstance(obj, BaseModel):
        cls = _PLAIN[type(obj).__name__]
        values = {f: _plain(getattr(obj, f)) for f in cls._fields}
        made = cls._make(values, set(obj.model_fields_set))
        if cls is Channel:
            made.__dict__["_xtra"] = dict(obj.__pydantic_extra__ or {})
        return made
    if type(obj) is list:
        return [_plain(v) for v in obj]
    if type(obj) is dict:
        return {k: _plain(v) for k, v in obj.items()}
    return obj


def _twin(obj: _Model) -> Any:
    """`obj` as its pydantic twin (not validated again: pydantic's model_construct)."""
    twin = _checked(type(obj))
    d = obj.__dict__
    values = {f: _twin_value(d[f]) for f in obj._fields}
    values.update(obj._extra())
    return twin.model_construct(_fields_set=set(obj.model_fields_set), **values)


def _twin_value(value: Any) -> Any:
    if isinstance(value, _Model):
        return _twin(value)
    if type(value) is list:
        return [_twin_value(v) for v in value]
    if type(value) is dict:
        return {k: _twin_value(v) for k, v in value.items()}
    return value


def json_schema() -> dict[str, Any]:
    """JSON Schema of a workflow file (`flowsh schema`)."""
    from flowsh import modelcheck

    return modelcheck.json_schema()


# -- the definition's JSON --------------------------------------------------------------

# Keys added after runs were first recorded: left out of a definition's hash while unset,
# so the same file hashes as it did before they existed (no "changed since" warning on a
# resume across an upgrade, no refused checkpoint in a re-exported script).
LATER_KEYS = ("catchup", "pools", "deadline")
LATER_STEP_KEYS = ("pool", "call", "params", "sources", "generates", "foreach",
                   "max_parallel")


def _unset(value: object) -> bool:
    return value is None or value == {} or value == []


def definition_json(wf: Workflow) -> str:
    """The workflow as its definition hashes hash it (resume, the exported script): the
    twin's ``model_dump_json(by_alias=True, exclude=...)``, byte for byte. Written here
    for what JSON gives back as pydantic writes it; a value it cannot vouch for (a float
    in exponent form, a date in executor_options...) goes through pydantic."""
    try:
        text = json.dumps(_jsonable(wf, top=True), ensure_ascii=False, separators=(",", ":"),
                          allow_nan=False)
        text.encode("utf-8")  # a lone surrogate: pydantic's to refuse
        return text
    except (_Slow, ValueError, UnicodeError):
        pass
    exclude: dict[Any, Any] = {"path": True}
    exclude |= {k: True for k in LATER_KEYS if _unset(getattr(wf, k))}
    steps = {i: {k: True for k in LATER_STEP_KEYS if _unset(getattr(step, k))}
             for i, step in enumerate(wf.steps)}
    exclude["steps"] = {i: keys for i, keys in steps.items() if keys}
    checked: str = _twin(wf).model_dump_json(by_alias=True, exclude=exclude)
    return checked


def _jsonable(obj: _Model, *, top: bool = False) -> dict[str, Any]:
    d = obj.__dict__
    later: tuple[str, ...] = LATER_KEYS if top else LATER_STEP_KEYS if type(obj) is Step \
        else ()
    out: dict[str, Any] = {}
    for f in obj._fields:
        if f in obj._excluded:
            continue
        v = d[f]
        if f in later and _unset(v):
            continue
        out[obj._alias.get(f, f)] = _json_value(v)
    for k, v in obj._extra().items():
        out[k] = _json_value(v)
    return out


def _json_value(v: Any) -> Any:
    kind = type(v)
    if kind is str or kind is bool or kind is int or v is None:
        return v
    if kind is float:
        if "e" in repr(v) or v != v or v in (float("inf"), float("-inf")):
            raise _Slow  # exponent form, inf, nan: written differently by pydantic
        return v
    if kind is list or kind is tuple:
        return [_json_value(x) for x in v]
    if kind is dict:
        if any(type(k) is not str for k in v):
            raise _Slow
        return {k: _json_value(x) for k, x in v.items()}
    if isinstance(v, _Model):
        return _jsonable(v)
    raise _Slow
