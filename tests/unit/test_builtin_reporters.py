"""flowsh.builtin.reporters: the built-in answer to flowsh_make_reporter, and a third party
answering first."""

from __future__ import annotations

from typing import Any

from flowsh import hookimpl, plugins
from flowsh.builtin.reporters import flowsh_make_reporter
from flowsh.runopts import Reporter
from flowsh.ui import JSONReporter, PlainReporter, QuietReporter, TTYReporter


def test_each_kind() -> None:
    assert isinstance(flowsh_make_reporter(kind="json", state_url=None), JSONReporter)
    quiet = flowsh_make_reporter(kind="quiet", state_url="sqlite:///x.db")
    assert isinstance(quiet, QuietReporter) and quiet.state_url == "sqlite:///x.db"
    assert isinstance(flowsh_make_reporter(kind="tty", state_url=None), TTYReporter)
    plain = flowsh_make_reporter(kind="plain", state_url=None)
    assert type(plain) is PlainReporter
    assert type(flowsh_make_reporter(kind="anything else", state_url=None)) is PlainReporter


def test_through_the_plugin_manager() -> None:
    assert isinstance(plugins.make_reporter("json"), JSONReporter)
    assert type(plugins.make_reporter("plain")) is PlainReporter


def test_a_third_party_answers_first_or_passes() -> None:
    class Mine(Reporter):
        pass

    class Plugin:
        @hookimpl
        def flowsh_make_reporter(self, kind: str) -> Any:
            return Mine() if kind == "plain" else None

    plugins.reset()
    pm = plugins.get_plugin_manager()
    p = Plugin()
    pm.register(p, name="my-reporter")
    try:
        assert type(plugins.make_reporter("plain")) is Mine
        assert isinstance(plugins.make_reporter("json"), JSONReporter)  # passed on
    finally:
        pm.unregister(p)
        plugins.reset()
