"""The plugin manager: registration hooks, duplicates, failing hooks, allow/deny lists."""

from __future__ import annotations

import json
from typing import Any

import pytest

from flowsh import hookimpl, plugins
from flowsh.state import RunRecord
from tests.conftest import emit_event, run_cli

KINDS = ["notifiers", "state_backends", "schedulers", "executors", "exporters"]


def _registering(kind: str, name: str, obj: object) -> object:
    hook = f"flowsh_register_{kind}"

    def impl(register: Any) -> None:
        register(name, obj)

    impl.__name__ = hook
    return type(f"Plugin_{kind}", (), {hook: staticmethod(hookimpl(impl))})()


@pytest.mark.parametrize("kind", KINDS)
def test_every_registration_hook_feeds_its_registry(kind):
    marker = object()
    plugins.get_plugin_manager().register(_registering(kind, "zz-test", marker), name="mine")
    assert plugins.registry(kind)["zz-test"] is marker
    assert plugins.registered_by(kind, "zz-test") == "mine"


def test_duplicate_is_named_by_plugin_and_third_party_wins(capsys):
    replacement = object()
    plugins.get_plugin_manager().register(_registering("notifiers", "email", replacement),
                                          name="better-mail")
    assert plugins.registry("notifiers")["email"] is replacement
    err = capsys.readouterr().err
    assert ("plugin notify_email registers notifier 'email', already registered by "
            "better-mail; keeping better-mail's") in err


def test_a_plugin_raising_in_a_hook_is_reported_and_others_still_run(capsys):
    calls = []

    class Broken:
        @hookimpl
        def flowsh_run_finished(self, run: RunRecord, workflow: Any) -> None:
            raise ValueError("kaput")

    class Fine:
        @hookimpl
        def flowsh_run_finished(self, run: RunRecord, workflow: Any) -> None:
            calls.append(run.run_id)

    pm = plugins.get_plugin_manager()
    pm.register(Fine(), name="fine")
    pm.register(Broken(), name="broken")
    run = RunRecord(run_id="r1", workflow="w", file=None, definition_hash="h", params={})
    from flowsh.model import Workflow

    wf = Workflow.model_validate({"name": "w", "steps": [{"name": "a", "run": "true"}]})
    emit_event("flowsh_run_finished", run=run, workflow=wf)
    assert calls == ["r1"]
    assert ("plugin broken failed in flowsh_run_finished: ValueError: kaput"
            in capsys.readouterr().err)


def test_a_plugin_raising_in_a_registration_hook(capsys):
    class Broken:
        @hookimpl
        def flowsh_register_notifiers(self, register: Any) -> None:
            raise RuntimeError("no config")

    plugins.get_plugin_manager().register(Broken(), name="broken-reg")
    assert "email" in plugins.registry("notifiers")
    assert ("plugin broken-reg failed in flowsh_register_notifiers: RuntimeError: no config"
            in capsys.readouterr().err)


def test_disable_plugins(monkeypatch):
    monkeypatch.setenv("FLOWSH_DISABLE_PLUGINS", "notify_email, notify_webhook")
    plugins.reset()
    names = set(plugins.registry("notifiers"))
    assert "email" not in names and "webhook" not in names and "command" in names


def test_unknown_hook_is_reported_by_check_pending(capsys):
    from flowsh import plugins as p

    class Typo:
        @hookimpl
        def flowsh_run_finshed(self, run: Any) -> None: ...

    p.reset()
    p.DEFAULT_PLUGINS, saved = (*p.DEFAULT_PLUGINS, "tests_typo_plugin"), p.DEFAULT_PLUGINS
    import sys
    import types

    mod = types.ModuleType("tests_typo_plugin")
    mod.flowsh_run_finshed = Typo.flowsh_run_finshed  # type: ignore[attr-defined]
    sys.modules["tests_typo_plugin"] = mod
    try:
        p.get_plugin_manager()
    finally:
        p.DEFAULT_PLUGINS = saved
        del sys.modules["tests_typo_plugin"]
    err = capsys.readouterr().err
    assert "plugin tests_typo_plugin implements unknown hooks" in err
    assert "flowsh_run_finshed" in err


def test_plugins_command_lists_builtins_with_hooks():
    res = run_cli("plugins", "--json")
    assert res.returncode == 0, res.stderr
    info = {p["name"]: p for p in json.loads(res.stdout)}
    assert info["notify_email"]["hooks"] == ["flowsh_register_notifiers"]
    assert info["notify_email"]["builtin"] is True
    assert "flowsh_run_finished" in info["alerts"]["hooks"]
    human = run_cli("plugins")
    assert human.returncode == 0
    assert any(line.startswith("notify_command") and "built-in" in line
               for line in human.stdout.splitlines())


def test_event_hooks_fire_in_order_during_a_real_run(write_flow):
    from flowsh.engine import RunOptions, run_workflow
    from flowsh.loader import load_workflow

    seen: list[tuple[str, ...]] = []

    class Spy:
        @hookimpl
        def flowsh_run_started(self, run: RunRecord, workflow: Any) -> None:
            seen.append(("run_started",))

        @hookimpl
        def flowsh_step_started(self, run: RunRecord, step: Any, workflow: Any) -> None:
            seen.append(("step_started", step.name, str(step.attempts)))

        @hookimpl
        def flowsh_step_retrying(self, run: RunRecord, step: Any, workflow: Any,
                                 delay: float) -> None:
            seen.append(("step_retrying", step.name, str(step.exit_code)))

        @hookimpl
        def flowsh_step_finished(self, run: RunRecord, step: Any, workflow: Any) -> None:
            seen.append(("step_finished", step.name, step.status))

        @hookimpl
        def flowsh_run_finished(self, run: RunRecord, workflow: Any) -> None:
            seen.append(("run_finished", run.status))

    plugins.get_plugin_manager().register(Spy(), name="spy")
    flow = write_flow("""
        steps:
          - {name: a, run: 'true'}
          - {name: b, run: 'exit 4', retries: 1, retry_delay: 0, jitter: 0}
    """)
    run = run_workflow(load_workflow(flow), RunOptions())
    assert run.exit_code == 1
    assert seen == [
        ("run_started",),
        ("step_started", "a", "1"), ("step_finished", "a", "succeeded"),
        ("step_started", "b", "1"), ("step_retrying", "b", "4"),
        ("step_started", "b", "2"), ("step_finished", "b", "failed"),
        ("run_finished", "failed"),
    ]


def test_flowsh_register_commands_adds_a_cli_command():
    import typer
    from typer.testing import CliRunner

    class Cmd:
        @hookimpl
        def flowsh_register_commands(self, app: typer.Typer) -> None:
            @app.command("hello")
            def hello(name: str) -> None:
                typer.echo(f"hello {name}")

    plugins.get_plugin_manager().register(Cmd(), name="hello-cmd")
    app = typer.Typer()
    plugins.emit("flowsh_register_commands", app=app)
    result = CliRunner().invoke(app, ["hello", "world"])
    assert result.exit_code == 0 and result.stdout == "hello world\n"
    # the built-in command plugins registered theirs on the same app
    assert CliRunner().invoke(app, ["plugins", "--help"]).exit_code == 0


def test_lazy_builtins_declare_exactly_what_their_modules_implement():
    """A `Lazy` line in DEFAULT_PLUGINS is all flowsh knows of a built-in until one of its
    hooks is called: its hooks and commands must be the module's own."""
    import importlib

    import typer

    for entry in plugins.DEFAULT_PLUGINS:
        if not isinstance(entry, plugins.Lazy):
            continue
        mod = importlib.import_module(entry.module)
        implemented = {name.removeprefix("flowsh_") for name in dir(mod)
                       if name.startswith("flowsh_") and hasattr(getattr(mod, name), "flowsh_impl")}
        assert set(entry.hooks.split()) == implemented, entry.module
        for name in implemented:  # no tryfirst, wrapper...: the stub could not say so
            opts = getattr(mod, f"flowsh_{name}").flowsh_impl
            assert not any(v for k, v in opts.items() if k != "specname"), (entry.module, opts)
        if "register_commands" in implemented:
            app = typer.Typer()
            mod.flowsh_register_commands(app)
            names = {c.name for c in app.registered_commands} | {
                g.name for g in app.registered_groups}
            assert set(entry.commands.split()) == names, entry.module
        else:
            assert not entry.commands, entry.module


def test_a_lazy_builtin_is_imported_at_the_first_call_of_its_hook():
    import subprocess
    import sys

    code = ("import sys; from flowsh import plugins; plugins.get_plugin_manager(); "
            "print('flowsh.builtin.notify_email' in sys.modules); "
            "plugins.registry('notifiers'); print('flowsh.builtin.notify_email' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["False", "True"]


def test_flowsh_COMMAND_registers_its_module_and_every_third_party_command():
    import typer

    class Extra:
        @hookimpl
        def flowsh_register_commands(self, app: typer.Typer) -> None:
            app.command("zz-extra")(lambda: None)

    plugins.get_plugin_manager().register(Extra(), name="extra")
    app = typer.Typer()
    plugins.register_commands(app, "history")
    names = {c.name for c in app.registered_commands}
    assert names == {"status", "history", "logs", "prune", "zz-extra"}
    everything = typer.Typer()
    plugins.register_commands(everything, "no-such-command")  # click words the error
    assert {"run", "status", "zz-extra"} <= {c.name for c in everything.registered_commands}
