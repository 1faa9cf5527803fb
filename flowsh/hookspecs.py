"""Every hook flowsh calls. Plugins implement them with ``@flowsh.hookimpl``.

Two kinds:

* Registration hooks receive a ``register`` callback. The core collects what each plugin
  registers, so it can name the plugin at fault when two register the same name. They are
  called once per process, the first time flowsh needs that kind of thing.
* `flowsh_make_reporter` chooses what a person (or a machine) sees of a run; the first
  plugin to answer wins, third parties before the built-in one.
* Event hooks are called for every run, in the runner process, after the state backend has
  recorded the transition, on the run's own event thread (`flowsh.events`), in order. A
  slow hook never holds the run (timeouts, retries and signals keep their times); the run
  ends after its hooks are done. Each receives ``ctx``, the run's `flowsh.api.RunContext`
  (the run's masker, its effective notify config, a per-plugin slot); ``step`` is a copy
  of the record as it was at the event. An exception in an event hook is reported once on
  stderr and never changes the run's outcome.

Implementations take any subset of a hook's arguments, by name (pluggy).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import typer

    from flowsh.events import RunContext
    from flowsh.model import Workflow
    from flowsh.runopts import Reporter
    from flowsh.state import RunRecord, StepRecord

hookspec = pluggy.HookspecMarker("flowsh")

Register = Callable[..., None]

# --- registration ---------------------------------------------------------------------


@hookspec
def flowsh_register_notifiers(register: Register) -> None:
    """Register notifier types for `notify.channels`.

    Call ``register(type_name, factory)``; ``factory(channel_name, config: dict)`` returns an
    object with ``send(alert: flowsh.notify.Alert) -> None`` and raises
    `flowsh.errors.WorkflowError` for a bad config. Called when a workflow has channels.
    """


@hookspec
def flowsh_register_state_backends(register: Register) -> None:
    """Register state backends by URL scheme.

    Call ``register(scheme, factory)``; ``factory(url: str)`` returns a
    `flowsh.state.StateBackend`. Called when flowsh opens its state store.
    """


@hookspec
def flowsh_register_schedulers(register: Register) -> None:
    """Register schedulers (crontab, systemd timers...) for `flowsh schedule`.

    Call ``register(name, factory)``; ``factory()`` returns an object with
    ``add(workflow, exprs) / list() / remove(name)``. Called by the schedule commands.
    """


@hookspec
def flowsh_register_executors(register: Register) -> None:
    """Register executors: where a step's process runs (local, Celery...).

    Call ``register(name, factory)``; ``factory(**options)`` returns a
    `flowsh.executor.Executor`. Called when a run starts.
    """


@hookspec
def flowsh_register_exporters(register: Register) -> None:
    """Register export formats for `flowsh export`.

    Call ``register(name, exporter)``; ``exporter(workflow, **options)`` returns the
    workflow as text (a bash script, a crontab line...), or ``{file name: text}`` for several
    files (systemd's units). Every exporter gets every option of `flowsh export --format
    NAME` (``inline``, ``script_name``, ``exprs``, ``script``, ``path``) and each
    ``--option KEY=VALUE``; it takes what it knows. Called by `flowsh export`.
    """


@hookspec
def flowsh_register_commands(app: typer.Typer) -> None:
    """Add sub-commands to the ``flowsh`` CLI. Called once when the CLI starts."""


@hookspec(firstresult=True)
def flowsh_make_reporter(kind: str, state_url: str | None) -> Reporter | None:
    """The reporter that shows a run (`flowsh.api.Reporter`): ``kind`` is ``"json"``
    (``--json``), ``"quiet"`` (``--quiet``), ``"tty"`` (stdout and stderr are a terminal)
    or ``"plain"`` (cron, CI, a pipe). Return None to leave it to the next plugin; the
    built-in ``reporters`` plugin answers last. Its methods are called on the run's loop
    thread, in order with the steps' output lines, so keep them quick. Called once per
    `flowsh run`, `resume` and `retry`."""


# --- run events -----------------------------------------------------------------------


@hookspec
def flowsh_run_started(ctx: RunContext, run: RunRecord, workflow: Workflow) -> None:
    """A run has started (or resumed): its record exists, no step has started yet."""


@hookspec
def flowsh_step_started(
    ctx: RunContext, run: RunRecord, step: StepRecord, workflow: Workflow
) -> None:
    """An attempt of ``step`` has started; ``step.attempts`` counts this attempt."""


@hookspec
def flowsh_step_retrying(
    ctx: RunContext, run: RunRecord, step: StepRecord, workflow: Workflow, delay: float
) -> None:
    """An attempt failed and another follows after ``delay`` seconds.

    ``step`` holds the failed attempt's exit code/signal and ``message``.
    """


@hookspec
def flowsh_step_waiting(
    ctx: RunContext, run: RunRecord, step: StepRecord, workflow: Workflow, pool: str
) -> None:
    """The step is ready but every slot of ``pool`` is held (by this run or any other
    flowsh process on the host); ``flowsh_step_started`` follows when it gets one.

    ``step`` is still ``pending``; its ``message`` says ``waiting for pool NAME``.
    """


@hookspec
def flowsh_step_finished(
    ctx: RunContext, run: RunRecord, step: StepRecord, workflow: Workflow
) -> None:
    """A step reached its final state for this run: succeeded, failed, skipped or interrupted.

    Skipped steps (an `if` test was false, or a dependency failed) fire this too, with
    ``step.attempts == 0`` when nothing ran.
    """


@hookspec
def flowsh_run_finished(ctx: RunContext, run: RunRecord, workflow: Workflow) -> None:
    """A run has ended; ``run.status`` and ``run.exit_code`` are final."""


def _all_hooks() -> dict[str, Any]:
    return {k: v for k, v in globals().items() if k.startswith("flowsh_") and callable(v)}
