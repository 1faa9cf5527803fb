"""flowsh's public API for plugin authors: import from here, and only from here.

Everything named in ``__all__`` is documented in docs/plugins.md and kept stable; the
rest of the ``flowsh`` package is internal and may change in any release (a test fails if
a plugin under plugins/ imports anything else). Names are loaded on first use, so
``from flowsh.api import hookimpl`` in a plugin's top level costs nothing at start-up.

Hooks (`flowsh.hookspecs`): registration hooks get ``register(name, obj)``; run-event hooks
get ``ctx`` (`RunContext`), ``run``, ``workflow`` and, for step events, ``step``.

Protocols a plugin implements:

* `Notifier` — ``send(alert: Alert)``; registered by ``flowsh_register_notifiers`` as a
  factory ``(channel_name, config) -> Notifier`` that raises `WorkflowError` (use
  `config_error`) for a bad config.
* `StateBackend` — registered by scheme with ``flowsh_register_state_backends``.
* `Scheduler` — ``add(workflow, exprs)``, ``list()``, ``remove(name)``.
* `Exporter` — ``(workflow, **options) -> str``; options are the ``--option KEY=VALUE``
  pairs of ``flowsh export``.
* `Executor` — where a step's process runs: ``start(StepRequest)``, ``wait(timeout)``
  yielding ``(key, Outcome)``, ``wake()``, ``cancel_all()``, ``running()``, ``close()``.
  A `RemoteExecutor` adds ``placements()`` (where each attempt runs, recorded) and
  ``stop_remote(run_id, keys, kill_grace)`` (a resume stops what a dead runner left).
  Its registered factory may have a ``check_options(options)`` attribute that checks
  ``executor_options`` without connecting anywhere and raises `OptionError` naming the
  key: `flowsh validate` and the start of a run then point at its line.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Protocol

from flowsh import hookimpl as hookimpl

if TYPE_CHECKING:
    from flowsh.durations import format_duration as format_duration
    from flowsh.durations import parse_duration as parse_duration
    from flowsh.errors import FlowshError as FlowshError
    from flowsh.errors import OptionError as OptionError
    from flowsh.errors import UsageError as UsageError
    from flowsh.errors import WorkflowError as WorkflowError
    from flowsh.events import RunContext as RunContext
    from flowsh.executor import EXIT_TIMEOUT as EXIT_TIMEOUT
    from flowsh.executor import Executor as Executor
    from flowsh.executor import Outcome as Outcome
    from flowsh.executor import OutputCallback as OutputCallback
    from flowsh.executor import Placement as Placement
    from flowsh.executor import RemoteExecutor as RemoteExecutor
    from flowsh.executor import StepRequest as StepRequest
    from flowsh.executor import WakePipe as WakePipe
    from flowsh.hookspecs import Register as Register
    from flowsh.http import post_json as post_json
    from flowsh.http import url_for_errors as url_for_errors
    from flowsh.loader import load_workflow as load_workflow
    from flowsh.model import Notify as Notify
    from flowsh.model import Workflow as Workflow
    from flowsh.notify import Alert as Alert
    from flowsh.notify import Notifier as Notifier
    from flowsh.notify import build_notifier as build_notifier
    from flowsh.notify import channel_timeout as channel_timeout
    from flowsh.notify import check_keys as check_keys
    from flowsh.notify import check_notify as check_notify
    from flowsh.notify import config_error as config_error
    from flowsh.notify import dispatch as dispatch
    from flowsh.notify import effective_notify as effective_notify
    from flowsh.notify import get_count as get_count
    from flowsh.notify import get_list as get_list
    from flowsh.notify import get_number as get_number
    from flowsh.notify import get_str as get_str
    from flowsh.notify import log_tail as log_tail
    from flowsh.ping import ping_url as ping_url
    from flowsh.plugins import get_plugin_manager as get_plugin_manager
    from flowsh.plugins import reset as reset_plugins
    from flowsh.plugins import warn as warn
    from flowsh.process import LocalExecutor as LocalExecutor
    from flowsh.runopts import Reporter as Reporter
    from flowsh.secrets import MASK as MASK
    from flowsh.secrets import Masker as Masker
    from flowsh.state import CRASHED as CRASHED
    from flowsh.state import FAILED as FAILED
    from flowsh.state import INTERRUPTED as INTERRUPTED
    from flowsh.state import PENDING as PENDING
    from flowsh.state import RETRYING as RETRYING
    from flowsh.state import RUNNING as RUNNING
    from flowsh.state import SKIPPED as SKIPPED
    from flowsh.state import SUCCEEDED as SUCCEEDED
    from flowsh.state import RunRecord as RunRecord
    from flowsh.state import StateBackend as StateBackend
    from flowsh.state import Status as Status
    from flowsh.state import StepRecord as StepRecord
    from flowsh.survivors import signal_marked as signal_marked
    from flowsh.survivors import tagged as tagged


class Scheduler(Protocol):
    """Installs workflows in a system scheduler (crontab, systemd timers)."""

    def add(self, workflow: Workflow, exprs: list[str]) -> Any: ...
    def list(self) -> list[Any]: ...
    def remove(self, name: str) -> None: ...


class Exporter(Protocol):
    """Text (written to stdout or -o FILE), or {file name: text} for several files
    (written into the -o directory). Every exporter gets every option `flowsh export` has
    (`inline`, `script_name`, `exprs`, `script`, `path`) and each `--option KEY=VALUE`;
    it takes what it knows."""

    def __call__(self, workflow: Workflow, **options: Any) -> str | dict[str, str]: ...


_WHERE = {
    "format_duration": "flowsh.durations", "parse_duration": "flowsh.durations",
    "FlowshError": "flowsh.errors", "UsageError": "flowsh.errors",
    "OptionError": "flowsh.errors",
    "WorkflowError": "flowsh.errors",
    "RunContext": "flowsh.events",
    "EXIT_TIMEOUT": "flowsh.executor", "Executor": "flowsh.executor",
    "Outcome": "flowsh.executor", "OutputCallback": "flowsh.executor",
    "StepRequest": "flowsh.executor", "WakePipe": "flowsh.executor",
    "Placement": "flowsh.executor", "RemoteExecutor": "flowsh.executor",
    "Register": "flowsh.hookspecs",
    "post_json": "flowsh.http", "url_for_errors": "flowsh.http",
    "load_workflow": "flowsh.loader",
    "Notify": "flowsh.model", "Workflow": "flowsh.model",
    **dict.fromkeys(("Alert", "Notifier", "build_notifier", "channel_timeout", "check_keys",
                     "check_notify", "config_error", "dispatch", "effective_notify",
                     "get_count", "get_list", "get_number", "get_str", "log_tail"),
                   "flowsh.notify"),
    "ping_url": "flowsh.ping",
    "get_plugin_manager": "flowsh.plugins", "warn": "flowsh.plugins",
    "reset_plugins": "flowsh.plugins",
    "LocalExecutor": "flowsh.process",
    "signal_marked": "flowsh.survivors", "tagged": "flowsh.survivors",
    "Reporter": "flowsh.runopts",
    "MASK": "flowsh.secrets", "Masker": "flowsh.secrets",
    **dict.fromkeys(("CRASHED", "FAILED", "INTERRUPTED", "PENDING", "RETRYING", "RUNNING",
                     "SKIPPED", "SUCCEEDED", "RunRecord", "StateBackend", "Status",
                     "StepRecord"), "flowsh.state"),
}

__all__ = [
    "CRASHED",
    "EXIT_TIMEOUT",
    "FAILED",
    "INTERRUPTED",
    "MASK",
    "PENDING",
    "RETRYING",
    "RUNNING",
    "SKIPPED",
    "SUCCEEDED",
    "Alert",
    "Executor",
    "Exporter",
    "FlowshError",
    "LocalExecutor",
    "Masker",
    "Notifier",
    "Notify",
    "OptionError",
    "Outcome",
    "OutputCallback",
    "Placement",
    "Register",
    "RemoteExecutor",
    "Reporter",
    "RunContext",
    "RunRecord",
    "Scheduler",
    "StateBackend",
    "Status",
    "StepRecord",
    "StepRequest",
    "UsageError",
    "WakePipe",
    "Workflow",
    "WorkflowError",
    "build_notifier",
    "channel_timeout",
    "check_keys",
    "check_notify",
    "config_error",
    "dispatch",
    "effective_notify",
    "format_duration",
    "get_count",
    "get_list",
    "get_number",
    "get_plugin_manager",
    "get_str",
    "hookimpl",
    "load_workflow",
    "log_tail",
    "parse_duration",
    "ping_url",
    "post_json",
    "reset_plugins",
    "signal_marked",
    "tagged",
    "url_for_errors",
    "warn",
]


_RENAMED = {"reset_plugins": "reset"}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'flowsh.api' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), _RENAMED.get(name, name))
    globals()[name] = value
    return value
