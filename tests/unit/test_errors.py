"""flowsh.errors: one line, the right exit code, FILE:LINE:COL for a bad file."""

from __future__ import annotations

import pytest

from flowsh import errors
from flowsh.errors import (
    FlowshError,
    LockHeldError,
    NotFoundError,
    PluginError,
    StateError,
    UsageError,
    WorkflowError,
)


@pytest.mark.parametrize(("cls", "code"), [
    (FlowshError, errors.EXIT_FAILED), (UsageError, errors.EXIT_USAGE),
    (WorkflowError, errors.EXIT_USAGE), (StateError, errors.EXIT_STATE),
    (NotFoundError, errors.EXIT_NOT_FOUND), (LockHeldError, errors.EXIT_LOCKED),
    (PluginError, errors.EXIT_PLUGIN),
])
def test_exit_codes(cls: type[FlowshError], code: int) -> None:
    assert cls.exit_code == code
    assert issubclass(cls, FlowshError)


def test_exit_code_values_are_documented_ones() -> None:
    assert (errors.EXIT_OK, errors.EXIT_FAILED, errors.EXIT_USAGE, errors.EXIT_STATE,
            errors.EXIT_NOT_FOUND, errors.EXIT_PLUGIN, errors.EXIT_LOCKED,
            errors.EXIT_INTERRUPTED) == (0, 1, 2, 3, 4, 5, 75, 130)


def test_message_and_hint() -> None:
    e = StateError("disk full", hint="free some space")
    assert str(e) == "disk full" and e.message == "disk full" and e.hint == "free some space"


def test_workflow_error_location_forms() -> None:
    assert str(WorkflowError("bad", path="f.yaml", line=3, col=7)) == "f.yaml:3:7: bad"
    assert str(WorkflowError("bad", path="f.yaml", line=3)) == "f.yaml:3: bad"
    assert str(WorkflowError("bad", path="f.yaml", col=7)) == "f.yaml: bad"
    e = WorkflowError("bad")
    assert str(e) == "<workflow>: bad" and e.detail == "bad" and e.path is None


def test_plugin_error_names_the_plugin() -> None:
    e = PluginError("duplicate notifier", plugin="acme")
    assert e.plugin == "acme" and str(e) == "duplicate notifier"
    with pytest.raises(FlowshError):
        raise e


def test_did_you_mean_names_the_nearest_known_name_or_nothing() -> None:
    assert errors.did_you_mean("biuld", ["build", "test"]) == " (did you mean 'build'?)"
    assert errors.did_you_mean("zzz", ["build", "test"]) == ""
    assert errors.did_you_mean("x", iter(())) == ""
