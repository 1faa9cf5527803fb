"""flowsh.checks: the one validation path before a run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from flowsh.checks import check_params, check_workflow
from flowsh.errors import UsageError, WorkflowError
from flowsh.loader import load_workflow

FLOW = "name: w\nparams:\n  DATE:\n  REGION: eu\nsteps:\n  - {name: a, run: 'true'}\n"


def test_unknown_param_with_suggestion(write_flow: Callable[..., Path]) -> None:
    wf = load_workflow(write_flow(FLOW))
    with pytest.raises(UsageError, match=r"unknown parameter 'REGON'.*did you mean 'REGION'"):
        check_params(wf, {"DATE": "x", "REGON": "us"})
    with pytest.raises(UsageError, match=r"\(declared: DATE, REGION\)|\(declared: REGION, DATE\)"):
        check_params(wf, {"ZZZZZ": "1"})


def test_no_params_declared(write_flow: Callable[..., Path]) -> None:
    wf = load_workflow(write_flow("name: w\nsteps:\n  - {name: a, run: 'true'}\n"))
    with pytest.raises(UsageError, match="the workflow declares no params"):
        check_params(wf, {"X": "1"})
    check_params(wf, {})


def test_required_params_may_come_from_a_record(write_flow: Callable[..., Path]) -> None:
    wf = load_workflow(write_flow(FLOW))
    with pytest.raises(UsageError, match="parameter DATE needs a value") as exc:
        check_params(wf, {"REGION": "us"})
    assert exc.value.exit_code == 2
    check_params(wf, {"DATE": "2026-12-05"})
    check_params(wf, {}, given=["DATE"])


def test_check_workflow_params_only_when_a_run_is_meant(write_flow: Callable[..., Path]) -> None:
    wf = load_workflow(write_flow(FLOW))
    check_workflow(wf)  # validate: required params not asked for
    with pytest.raises(UsageError, match="DATE"):
        check_workflow(wf, {})


def test_check_workflow_missing_function(write_flow: Callable[..., Path], tmp_path: Path) -> None:
    (tmp_path / "lib.sh").write_text("load() { :; }\n")
    wf = load_workflow(write_flow("name: w\nsource: [lib.sh]\nsteps:\n  - {name: a, run: laod}\n"))
    with pytest.raises(WorkflowError, match="laod"):
        check_workflow(wf)


def test_check_workflow_unknown_notify_channel(write_flow: Callable[..., Path]) -> None:
    path = write_flow("name: w\nnotify:\n  routes:\n    critical: [nowhere]\n"
                      "steps:\n  - {name: a, run: 'true'}\n")
    wf = load_workflow(path)
    with pytest.raises(WorkflowError, match="nowhere") as exc:
        check_workflow(wf)
    assert exc.value.path == str(path) and exc.value.line == 4


def test_executor_options_are_checked_at_their_line(write_flow: Callable[..., Path]) -> None:
    path = write_flow("name: w\nexecutor_options:\n  workers: 4\nsteps:\n  - {name: a, run: x}\n")
    wf = load_workflow(path)
    with pytest.raises(WorkflowError) as exc:
        check_workflow(wf)
    assert str(exc.value).startswith(f"{path}:3:3: executor 'local' takes no executor_options")
    assert exc.value.exit_code == 2


def test_unknown_executor_is_refused_at_its_line(write_flow: Callable[..., Path]) -> None:
    path = write_flow("name: w\nexecutor: nosuch\nsteps:\n  - {name: a, run: x}\n")
    wf = load_workflow(path)
    with pytest.raises(WorkflowError, match=rf"^{path}:2:11: unknown executor 'nosuch'"):
        check_workflow(wf)
    # Named on the command line, it is not the file's fault: no FILE:LINE.
    ok = load_workflow(write_flow("name: w\nsteps:\n  - {name: a, run: x}\n", "ok.yaml"))
    with pytest.raises(UsageError, match=r"^unknown executor 'nosuch'") as exc:
        check_workflow(ok, executor="nosuch")
    assert not isinstance(exc.value, WorkflowError)


def test_an_executor_without_check_options_checks_them_when_it_starts(
        write_flow: Callable[..., Path]) -> None:
    from typing import Any

    from flowsh import hookimpl, plugins

    class Mine:
        @hookimpl
        def flowsh_register_executors(self, register: Any) -> None:
            register("mine", lambda **options: None)

    plugins.reset()
    pm = plugins.get_plugin_manager()
    mine = Mine()
    pm.register(mine, name="mine-executor")
    try:
        wf = load_workflow(write_flow(
            "name: w\nexecutor: mine\nexecutor_options: {anything: 1}\n"
            "steps:\n  - {name: a, run: x}\n"))
        check_workflow(wf)
    finally:
        pm.unregister(mine)
        plugins.reset()
