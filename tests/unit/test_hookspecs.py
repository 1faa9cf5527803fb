"""flowsh.hookspecs: every hook named flowsh_*, documented, and callable through pluggy with
a small plugin class registered in the test."""

from __future__ import annotations

import inspect
from typing import Any

import pluggy
import pytest

from flowsh import hookimpl, hookspecs, plugins


def _hooks() -> dict[str, Any]:
    return {n: f for n, f in vars(hookspecs).items() if n.startswith("flowsh_") and callable(f)}


def test_every_hook_prefixed_documented_and_typed() -> None:
    hooks = _hooks()
    assert {"flowsh_register_notifiers", "flowsh_register_state_backends",
            "flowsh_register_executors", "flowsh_run_started", "flowsh_run_finished",
            "flowsh_step_finished"} <= set(hooks)
    for name, fn in hooks.items():
        assert (fn.__doc__ or "").strip(), name
        sig = inspect.signature(fn)
        assert all(p.annotation is not inspect.Parameter.empty for p in sig.parameters.values()), name


def test_markers_are_flowshs() -> None:
    assert isinstance(hookspecs.hookspec, pluggy.HookspecMarker)
    assert hookspecs.hookspec.project_name == "flowsh"
    assert hookimpl.project_name == "flowsh"


def test_a_misnamed_argument_is_caught() -> None:
    pm = pluggy.PluginManager("flowsh")
    pm.add_hookspecs(hookspecs)

    class Bad:
        @hookimpl
        def flowsh_run_started(self, ctx: Any, nonsense: Any) -> None: ...

    with pytest.raises(pluggy.PluginValidationError):
        pm.register(Bad())


def test_registration_hook_reaches_the_registry() -> None:
    class Mine:
        @hookimpl
        def flowsh_register_state_backends(self, register: Any) -> None:
            register("unit-test-scheme", dict)
            register("sqlite", list)  # a third party may replace a built-in

    plugins.reset()
    pm = plugins.get_plugin_manager()
    mine = Mine()
    pm.register(mine, name="unit-test-plugin")
    try:
        backends = plugins.registry("state_backends")
        assert backends["unit-test-scheme"] is dict
        assert backends["sqlite"] is list
        assert plugins.registered_by("state_backends", "sqlite") == "unit-test-plugin"
    finally:
        pm.unregister(mine)
        plugins.reset()


def test_event_hooks_get_keyword_arguments() -> None:
    pm = pluggy.PluginManager("flowsh")
    pm.add_hookspecs(hookspecs)
    seen: list[tuple[str, Any]] = []

    class Listener:
        @hookimpl
        def flowsh_run_finished(self, ctx: Any, run: Any, workflow: Any) -> None:
            seen.append(("finished", run))

    pm.register(Listener())
    pm.hook.flowsh_run_finished(ctx=None, run="R", workflow="W")
    assert seen == [("finished", "R")]
