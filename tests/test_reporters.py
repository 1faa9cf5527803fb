"""The reporter is a plugin (`flowsh_make_reporter`): a third party can replace the view of
a run, and sees its events in order with the steps' output, on the loop's thread."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from flowsh import hookimpl, plugins
from flowsh.api import Reporter
from tests.conftest import cli_in_process


class _Recording(Reporter):
    wants_output = True

    def __init__(self) -> None:
        self.events: list[str] = []
        self.threads: set[int] = set()

    def _note(self, what: str) -> None:
        self.events.append(what)
        self.threads.add(threading.get_ident())

    def run_started(self, run: Any, wf: Any) -> None:
        self._note(f"run {wf.name}")

    def step_started(self, run: Any, step: Any) -> None:
        self._note(f"start {step.name}")

    def step_output(self, step: str, line: str) -> None:
        self._note(f"out {step} {line.rstrip()}")

    def step_finished(self, run: Any, step: Any) -> None:
        self._note(f"end {step.name} {step.status}")

    def run_finished(self, run: Any) -> None:
        self._note(f"done {run.status}")


class _Plugin:
    def __init__(self) -> None:
        self.reporter = _Recording()
        self.asked: list[tuple[str, str | None]] = []

    @hookimpl
    def flowsh_make_reporter(self, kind: str, state_url: str | None) -> Reporter | None:
        self.asked.append((kind, state_url))
        return self.reporter if kind == "quiet" else None


@pytest.fixture
def flow(tmp_path: Path) -> Path:
    path = tmp_path / "two.yaml"
    path.write_text("name: two\nsteps:\n  - {name: a, run: 'echo one; echo two'}\n"
                    "  - {name: b, needs: [a], run: 'echo three'}\n")
    return path


def test_a_plugins_reporter_replaces_the_builtin_and_sees_events_in_order(
        flow: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plugin = _Plugin()
    plugins.get_plugin_manager().register(plugin, name="zz-reporter")
    state = f"sqlite:///{tmp_path}/s.db"
    assert cli_in_process("run", str(flow), "--quiet", "--state", state) == 0
    assert plugin.asked == [("quiet", state)]
    assert plugin.reporter.events == [
        "run two", "start a", "out a one", "out a two", "end a succeeded",
        "start b", "out b three", "end b succeeded", "done succeeded"]
    assert plugin.reporter.threads == {threading.get_ident()}
    assert capsys.readouterr().out == ""  # the built-in quiet reporter did not run too


def test_kinds_a_plugin_declines_fall_to_the_builtin_reporter(
        flow: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plugin = _Plugin()
    plugins.get_plugin_manager().register(plugin, name="zz-reporter")
    assert cli_in_process("run", str(flow), "--json") == 0
    assert plugin.asked[0][0] == "json" and plugin.reporter.events == []
    lines = capsys.readouterr().out.splitlines()
    assert lines and all(line.startswith("{") for line in lines)


def test_a_reporter_factory_that_raises_is_reported_and_the_builtin_shows_the_run(
        flow: Path, capsys: pytest.CaptureFixture[str]) -> None:
    class Broken:
        @hookimpl
        def flowsh_make_reporter(self, kind: str) -> Reporter | None:
            raise RuntimeError("no screen")

    plugins.get_plugin_manager().register(Broken(), name="zz-broken")
    assert cli_in_process("run", str(flow)) == 0
    captured = capsys.readouterr()
    assert "plugin zz-broken failed in flowsh_make_reporter: RuntimeError: no screen" \
        in captured.err
    assert "succeeded" in captured.out + captured.err
