"""The workflow model as pydantic classes: what a file is checked against when the fast
path (`flowsh.model`) is not sure, the source of every refusal's wording, and of the JSON
Schema (`flowsh schema`).

The classes, their fields, docstrings and validators are the contract the plain model in
`flowsh.model` implements without pydantic (~130 ms of import and class building at every
start): a value it cannot vouch for is validated here, and the result converted to it.
Nothing else imports this module; it imports pydantic.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from flowsh.durations import DURATION_PATTERN, parse_duration
from flowsh.modelrules import (
    MAX_CONCURRENCY,
    MAX_ITEMS,
    MAX_POOL_SIZE,
    MAX_RETRIES,
    MAX_STEP_NAME,
    POOL_NAME,
    STEP_NAME,
    EventName,
    Severity,
    as_list,
    check_cron,
    check_globs,
    check_idents,
    not_a_bool,
    positive_queue_timeout,
    shell_named,
    str_value,
)
from flowsh.secrets import SECRET_NAME

Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": DURATION_PATTERN},
                {"type": "number", "minimum": 0},
            ],
            "description": "Seconds, or a duration such as 90s, 5m, 1h30m, 250ms.",
        }
    ),
]


Scalar = Annotated[str, BeforeValidator(str_value)]


StrList = Annotated[list[str], BeforeValidator(as_list)]
# `sources:`/`generates:`: one glob or a list; the schema says both (an editor must not flag
# `sources: "src/*.c"`).
GlobList = Annotated[list[str], BeforeValidator(as_list), WithJsonSchema(
    {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]})]


CronList = Annotated[list[Annotated[str, AfterValidator(check_cron)]], BeforeValidator(as_list)]


# Last, after the constraints: the JSON schema stays as it was.
NOT_BOOL = BeforeValidator(not_a_bool)

PoolName = Annotated[str, Field(pattern=POOL_NAME)]
PoolSize = Annotated[int, Field(ge=1, le=MAX_POOL_SIZE), NOT_BOOL]


# A command's own exit code that `skip_on`/`success_on` may name: 124 and up also mean a
# timeout, a command that could not run, or a signal, which a shell cannot tell apart.
OwnExitCode = Annotated[int, Field(ge=1, le=123), NOT_BOOL]
RetryCode = Annotated[int, Field(ge=1, le=255), NOT_BOOL]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Defaults(_Frozen):
    """Settings every step inherits unless it sets its own."""

    retries: Annotated[int, Field(ge=0, le=MAX_RETRIES,
                                  description="Extra attempts after a failure."), NOT_BOOL] = 0
    retry_delay: Duration = Field(1.0, description="Wait before the first retry.")
    backoff: Annotated[float, Field(
        ge=1.0, le=100.0, description="Multiplier applied to the delay per retry."), NOT_BOOL] = 2.0
    max_delay: Duration = Field(300.0, description="Upper bound on one retry delay.")
    jitter: Annotated[float, Field(
        ge=0.0, le=1.0, description="Random +/- fraction applied to each retry delay."),
        NOT_BOOL] = 0.1
    timeout: Duration | None = Field(None, description="Kill the step after this long.")


class ForeachFile(_Frozen):
    """`foreach: {file: PATH}`: the file's lines (relative to the step's workdir)."""

    file: str = Field(min_length=1, description="A file, relative to the step's workdir.")


class ForeachCommand(_Frozen):
    """`foreach: {command: TEXT}`: the lines a command prints, run in the step's environment."""

    command: str = Field(min_length=1, description="Shell text; its stdout lines are the items.")


class ForeachOutput(_Frozen):
    """`foreach: {output: NAME}`: the lines of an upstream output (or env var) NAME."""

    output: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                        description="An output or variable the step sees.")


def _foreach_form(value: Any) -> str | None:
    if isinstance(value, list):
        return "list"
    for form, cls in (("file", ForeachFile), ("command", ForeachCommand),
                      ("output", ForeachOutput)):
        if isinstance(value, cls):  # serializing a validated step (its definition hash)
            return form
    if isinstance(value, dict) and len(value) == 1:
        key = next(iter(value))
        return key if key in ("file", "command", "output") else None
    return None


# One form per value, told apart by its shape, so an error names what the value should be
# rather than why it is none of four things.
Foreach = Annotated[
    Annotated[list[Scalar], Tag("list")] | Annotated[ForeachFile, Tag("file")]
    | Annotated[ForeachCommand, Tag("command")] | Annotated[ForeachOutput, Tag("output")],
    Discriminator(_foreach_form, custom_error_type="foreach_form", custom_error_message=(
        "should be a list of items, or one of {file: PATH}, {command: TEXT}, "
        "{output: NAME}"))]


class Step(_Frozen):
    """One step: a shell command (`run`) or a script file (`script` + `args`)."""

    name: str = Field(description="Unique step name (letters, digits, _ . -).")
    description: str | None = None
    run: str | None = Field(None, description="Shell text, run by `shell`.")
    script: str | None = Field(None, description="A script file, relative to the workdir.")
    args: list[Scalar] = Field(default_factory=list, description="Arguments for `script`.")
    needs: StrList | None = Field(
        None, description="Steps this one waits for. Absent: the step listed before it."
    )
    env: dict[str, Scalar] = Field(default_factory=dict)
    workdir: str | None = None
    source: StrList = Field(
        default_factory=list,
        description="Bash files sourced before the step (after the workflow's).",
    )
    shell: Annotated[str | None, AfterValidator(shell_named)] = None
    retries: Annotated[int | None, Field(ge=0, le=MAX_RETRIES), NOT_BOOL] = None
    retry_delay: Duration | None = None
    backoff: Annotated[float | None, Field(ge=1.0, le=100.0), NOT_BOOL] = None
    max_delay: Duration | None = None
    jitter: Annotated[float | None, Field(ge=0.0, le=1.0), NOT_BOOL] = None
    timeout: Duration | None = None
    if_: str | None = Field(
        None, alias="if", description="Shell test; a non-zero exit skips the step."
    )
    always: bool = Field(False, description="Run even after failures (like `finally`).")
    continue_on_failure: bool = Field(
        False, description="A failure of this step does not fail the run."
    )
    keep_children: bool = Field(
        False, description="When it exits normally, leave running what it started (a daemon)."
    )
    retry_on: list[RetryCode] | None = Field(
        None, description="Retry only after these exit codes (124: a timeout, 128+N: signal "
        "N). Absent: after any failure.")
    skip_on: list[OwnExitCode] = Field(
        default_factory=list, description="These exit codes mark the step skipped ('exit N'); "
        "its dependents still run.")
    success_on: list[OwnExitCode] = Field(
        default_factory=list, description="These exit codes count as success, like 0.")
    queue: str | None = Field(
        None, min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:@-]+$",
        description="Executor queue (host group) this step runs on; the local executor "
                    "and exports ignore it.",
    )
    queue_timeout: Duration | None = Field(
        None, description="Fail the step when no worker has started it this long after "
                          "it was submitted (remote executors).",
    )
    pool: PoolName | None = Field(
        None, description="A pool (declared in `pools`, here or in the user config) each "
        "attempt holds a slot of while it runs; it waits for a free one first.")
    call: str | None = Field(
        None, min_length=1, description="Another workflow file (relative to this one) run "
        "as this step: a child run (docs/semantics.md CALL).")
    params: dict[str, Scalar] = Field(
        default_factory=dict, description="With `call`: the child's params, literal text.")

    foreach: Foreach | None = Field(
        None, description="Run the step once per item: a list, `{file: PATH}`, `{command: "
        "TEXT}` or `{output: NAME}` (lines, blank ones dropped); each item an instance "
        "`step[item]` with $ITEM and $ITEM_INDEX (docs/semantics.md FOREACH).")
    max_parallel: Annotated[int | None, Field(
        ge=1, le=MAX_ITEMS, description="With `foreach`: at most this many items at "
        "once (within the run's concurrency)."), NOT_BOOL] = None

    sources: GlobList = Field(
        default_factory=list, description="Globs (relative to the workdir) of the files it "
        "reads: with them the step is skipped as up to date when nothing it depends on "
        "changed since its last success (docs/semantics.md UPTODATE).")
    generates: GlobList = Field(
        default_factory=list, description="Globs (relative to the workdir) of the files it "
        "writes: a step is up to date only while they are as its last success left them.")

    @field_validator("queue_timeout")
    @classmethod
    def _queue_timeout_positive(cls, value: float | None) -> float | None:
        return positive_queue_timeout(value)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not STEP_NAME.match(v):
            raise ValueError(f"step name {v!r} may hold only letters, digits, '_', '.', '-'")
        if len(v) > MAX_STEP_NAME:
            raise ValueError(f"step name {v[:20]}... is {len(v)} characters long; at most "
                             f"{MAX_STEP_NAME}")
        return v

    @field_validator("env")
    @classmethod
    def _env(cls, v: dict[str, str]) -> dict[str, str]:
        return check_idents(v, "env")

    @field_validator("params")
    @classmethod
    def _call_params(cls, v: dict[str, str]) -> dict[str, str]:
        return check_idents(v, "param")

    @field_validator("sources", "generates")
    @classmethod
    def _globs(cls, v: list[str]) -> list[str]:
        return check_globs(v)

    @model_validator(mode="after")
    def _one_action(self) -> Step:
        if [self.run, self.script, self.call].count(None) != 2:
            raise ValueError(f"step {self.name!r} needs exactly one of `run`, `script` or "
                             "`call`")
        if self.params and self.call is None:
            raise ValueError(f"step {self.name!r}: `params` goes with `call`")
        if self.args and self.script is None:
            raise ValueError(f"step {self.name!r}: `args` goes with `script`")
        return self

    @field_validator("foreach")
    @classmethod
    def _items(cls, v: Foreach | None) -> Foreach | None:
        if isinstance(v, list):
            if len(v) > MAX_ITEMS:
                raise ValueError(f"{len(v)} items; at most {MAX_ITEMS}")
            for item in v:
                if "\0" in item or "\n" in item or not item.strip():
                    raise ValueError(f"item {item!r} is blank or holds a line break or NUL")
        elif isinstance(v, ForeachOutput) and SECRET_NAME.search(v.output):
            raise ValueError(f"{v.output!r} is a secret: items name instances and are "
                             "recorded in clear")
        return v

    @model_validator(mode="after")
    def _foreach(self) -> Step:
        if self.foreach is None:
            if self.max_parallel is not None:
                raise ValueError(f"step {self.name!r}: `max_parallel` goes with `foreach`")
            return self
        for other in ("call", "sources"):
            if getattr(self, other):
                raise ValueError(f"step {self.name!r}: `foreach` cannot go with `{other}` "
                                 "(docs/semantics.md FOREACH-9)")
        return self

    @model_validator(mode="after")
    def _codes(self) -> Step:
        if not ((self.success_on and (self.skip_on or self.retry_on))
                or (self.retry_on and self.skip_on)):
            return self  # no two lists to share a code: most steps (10,000 in W4: -30 ms)
        for a, b in (("success_on", "skip_on"), ("retry_on", "success_on"),
                     ("retry_on", "skip_on")):
            both = sorted(set(getattr(self, a) or ()) & set(getattr(self, b) or ()))
            if both:
                raise ValueError(f"step {self.name!r}: exit code {both[0]} is in both `{a}` "
                                 f"and `{b}`")
        return self

    @property
    def retry_count(self) -> int:
        return self.retries or 0


class Channel(BaseModel):
    """A notification channel: `type` names a notifier; other keys are its config."""

    model_config = ConfigDict(extra="allow", frozen=True)
    type: str


class Notify(_Frozen):
    """The seed's `alert()`: channels, severity routes, and which events alert at what level."""

    channels: dict[str, Channel] = Field(default_factory=dict)
    routes: dict[Severity, StrList] = Field(default_factory=dict)
    events: dict[EventName, Severity] = Field(default_factory=dict)
    long_after: Duration | None = Field(
        None, description="A run still going after this long fires `run_long`."
    )


class Monitor(_Frozen):
    """Logs and metrics written by the built-in monitoring plugins."""

    csv: bool | str = Field(True, description="The seed's CSV log: true, false or a path.")
    jsonl: bool | str = Field(True, description="JSON Lines event log: true, false or a path.")
    prometheus: bool | str = Field(
        False, description="Prometheus textfile: true (default path), false, or a path."
    )
    push: str | None = Field(None, description="Pushgateway URL.")


class CatchUp(_Frozen):
    """Slots of the `schedule` missed in a window, run before a scheduled run's own."""

    window: Duration = Field(
        description="How far back from the run's slot a missed slot is made up (e.g. 2d).")
    policy: Literal["latest", "all", "none"] = Field(
        "latest", description="latest: the newest missed slot only; all: every missed slot, "
        "oldest first; none: nothing.")


class Workflow(_Frozen):
    """A validated workflow. Build it with `flowsh.loader.load_workflow`."""

    name: str
    description: str | None = None
    params: dict[str, Scalar] = Field(default_factory=dict)
    env: dict[str, Scalar] = Field(default_factory=dict)
    env_file: str | None = None
    secrets: StrList = Field(
        default_factory=list, description="More env/param names whose values are masked."
    )
    shell: Annotated[str, AfterValidator(shell_named)] = Field(
        "bash", description="Interpreter for `run` text (bash, sh, zsh...)."
    )
    strict: bool = Field(True, description="Run `run` text under `set -eo pipefail`.")
    workdir: str | None = None
    source: StrList = Field(default_factory=list)
    concurrency: Annotated[int, Field(ge=1, le=MAX_CONCURRENCY), NOT_BOOL] = 4
    overlap: Literal["skip", "wait", "allow"] = "skip"
    lock_timeout: Duration | None = None
    kill_grace: Duration = Field(
        5.0, description="After a timeout or Ctrl-C: wait this long after TERM before KILL."
    )
    state: str | None = Field(None, description="State URL, e.g. sqlite:///path or json:///dir.")
    queue_timeout: Duration | None = Field(
        None, description="Default `queue_timeout` of the steps (remote executors)."
    )

    @field_validator("queue_timeout")
    @classmethod
    def _queue_timeout_positive(cls, value: float | None) -> float | None:
        return positive_queue_timeout(value)
    executor: str = Field(
        "local", description="Where steps run: `local`, or one a plugin adds (e.g. `celery`)."
    )
    executor_options: dict[str, Any] = Field(
        default_factory=dict, description="Options for the executor (broker URL, queue...)."
    )
    defaults: Defaults = Field(default_factory=Defaults)  # type: ignore[arg-type]
    steps: list[Step] = Field(min_length=1)
    notify: Notify = Field(default_factory=Notify)  # type: ignore[arg-type]
    monitor: Monitor = Field(default_factory=Monitor)  # type: ignore[arg-type]
    pools: dict[PoolName, PoolSize] = Field(
        default_factory=dict, description="Concurrency pools shared by every flowsh process "
        "on the host: name -> how many steps may hold it at once (the user config's value "
        "when smaller).")
    schedule: CronList = Field(
        default_factory=list,
        description="Cron expressions (5 fields, or 6 with seconds last), optionally "
        "prefixed with CRON_TZ=Zone.",
    )
    catchup: CatchUp | None = Field(
        None, description="Make up slots of the `schedule` that have no succeeded run "
        "(docs/scheduling.md).")
    deadline: str | None = Field(
        None, description="When a run must be done by: a time of day (06:00, in the "
        "schedule's zone, the first at or after the run's slot) or a duration after the "
        "slot (4h); a run without a slot counts from its start. Fires `run_late`.")
    # Set by the loader, not by the file.
    path: str | None = Field(None, exclude=True, json_schema_extra={"readOnly": True})
    # Params declared without a default (`day:` / `day: null`): taken out of `params`
    # by `_split_params`, so `params` keeps only names with a value.
    required_params: tuple[str, ...] = Field(
        (), exclude=True, json_schema_extra={"readOnly": True})
    # False when the file has no `name:` (the loader then names it after the file): see
    # `identity`.
    name_declared: bool = Field(True, exclude=True, json_schema_extra={"readOnly": True})

    @model_validator(mode="before")
    @classmethod
    def _split_params(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        params = data.get("params")
        if isinstance(params, dict) and any(v is None for v in params.values()):
            data = {**data, "params": {k: v for k, v in params.items() if v is not None},
                    "required_params": tuple(k for k, v in params.items() if v is None)}
        return data

    @field_validator("catchup")
    @classmethod
    def _catchup(cls, v: CatchUp | None, info: ValidationInfo) -> CatchUp | None:
        if v is not None and not info.data.get("schedule"):
            raise ValueError("catchup needs a `schedule` (the slots it makes up are its "
                             "fire times)")
        if v is not None and v.window <= 0:
            raise ValueError("catchup window must be more than 0")
        return v

    @field_validator("deadline", mode="before")
    @classmethod
    def _deadline(cls, v: Any) -> Any:
        if v is None:
            return v
        from flowsh.deadline import parse_deadline

        parse_deadline(v)
        return v

    @field_validator("required_params")
    @classmethod
    def _required(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        check_idents(dict.fromkeys(v, ""), "param")
        return v

    @field_validator("name")
    @classmethod
    def _wf_name(cls, v: str) -> str:
        if not STEP_NAME.match(v):
            raise ValueError(f"workflow name {v!r} may hold only letters, digits, '_', '.', '-'")
        if len(v) > MAX_STEP_NAME:  # it names files (the lock, the script's checkpoint) too
            raise ValueError(f"workflow name {v[:20]}... is {len(v)} characters long; at "
                             f"most {MAX_STEP_NAME}")
        return v

    @field_validator("params")
    @classmethod
    def _params(cls, v: dict[str, str]) -> dict[str, str]:
        return check_idents(v, "param")

    @field_validator("env")
    @classmethod
    def _env(cls, v: dict[str, str]) -> dict[str, str]:
        return check_idents(v, "env")

    @model_validator(mode="after")
    def _resolve(self) -> Workflow:
        d = self.defaults
        resolved: list[Step] = []
        previous: str | None = None
        for step in self.steps:
            updates: dict[str, Any] = {}
            for key in ("retries", "retry_delay", "backoff", "max_delay", "jitter", "timeout"):
                if getattr(step, key) is None:
                    updates[key] = getattr(d, key)
            if step.needs is None:
                updates["needs"] = [previous] if previous is not None else []
            if step.shell is None:
                updates["shell"] = self.shell
            resolved.append(_updated(step, updates) if updates else step)
            previous = step.name
        object.__setattr__(self, "steps", resolved)
        return self


def _updated(step: Step, updates: dict[str, Any]) -> Step:
    """``step.model_copy(update=updates)``, in half the time: what model_copy does (a new
    instance sharing the values, the updated fields marked set) without its three generic
    ``copy.copy`` calls. 9.5 -> 4.8 us a step: 47 ms of validating 10,000 steps."""
    new = Step.__new__(Step)
    object.__setattr__(new, "__dict__", {**step.__dict__, **updates})
    object.__setattr__(new, "__pydantic_extra__", step.__pydantic_extra__)
    object.__setattr__(new, "__pydantic_fields_set__",
                       step.__pydantic_fields_set__ | updates.keys())
    object.__setattr__(new, "__pydantic_private__", step.__pydantic_private__)
    return new


def json_schema() -> dict[str, Any]:
    """JSON Schema of a workflow file (`flowsh schema`)."""
    schema = Workflow.model_json_schema(by_alias=True, mode="validation")
    schema["properties"].pop("path", None)
    schema["properties"].pop("required_params", None)
    schema["properties"].pop("name_declared", None)
    # `day:` (null) declares a required param.
    params = schema["properties"]["params"]
    params["additionalProperties"] = {"anyOf": [params["additionalProperties"],
                                                {"type": "null"}]}
    params["description"] = ("Names (shell identifiers) and default values; a name with "
                             "no value (null) is required on the command line.")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "flowsh workflow"
    return schema
