"""flowsh.builtin.metrics_prometheus: the textfile (parsed by prometheus_client) and the push."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from flowsh.builtin import metrics_prometheus as mp
from flowsh.events import RunContext
from flowsh.loader import load_workflow
from flowsh.secrets import Masker
from flowsh.state import FAILED, SKIPPED, SUCCEEDED, StepRecord, flowsh_home

from . import backend_cases as cases
from .loopback import serve


def _run(status: str, ended: float, name: str = 'w"x') -> object:
    run = cases.record("m1", workflow=name)
    run.status = status  # type: ignore[assignment]
    run.started_at, run.ended_at = ended - 10, ended
    run.exit_code = 0 if status == SUCCEEDED else 1
    run.steps = {"a": StepRecord("a", status=SUCCEEDED, attempts=2, started_at=1.0, ended_at=3.5),
                 "b": StepRecord("b", status=SKIPPED)}
    run.step_names = ["a", "b"]
    return run


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_render_parses_as_prometheus_text() -> None:
    got = _samples(mp.render(_run(SUCCEEDED, 5000.0)))  # type: ignore[arg-type]
    wf = (("workflow", 'w"x'),)
    assert got[("flowsh_run_duration_seconds", wf)] == 10.0
    assert got[("flowsh_run_last_success_timestamp_seconds", wf)] == 5000.0
    assert got[("flowsh_run_last_status", wf)] == 0
    assert got[("flowsh_step_attempts", (("step", "a"), *wf))] == 2
    assert got[("flowsh_step_duration_seconds", (("step", "a"), *wf))] == 2.5
    assert got[("flowsh_step_last_success", (("step", "b"), *wf))] == 0
    assert ("flowsh_step_duration_seconds", (("step", "b"), *wf)) not in got


def test_last_success_kept_across_a_failure(write_flow: Callable[..., Path]) -> None:
    wf = load_workflow(write_flow("name: w\nmonitor: {prometheus: true}\nsteps:\n  - {name: a, run: x}\n"))
    path = mp.textfile_path(wf)
    assert path == flowsh_home() / "metrics" / "flowsh_w.prom"
    for status, ended in ((SUCCEEDED, 5000.0), (FAILED, 6000.0)):
        run = _run(status, ended, name="w")
        mp.flowsh_run_finished(ctx=RunContext(run=run, workflow=wf, masker=Masker(),  # type: ignore[arg-type]
                                              run_dir=Path("/nonexistent")),
                               run=run, workflow=wf)  # type: ignore[arg-type]
    assert path is not None and path.stat().st_mode & 0o777 == 0o644
    got = _samples(path.read_text())
    assert got[("flowsh_run_last_success_timestamp_seconds", (("workflow", "w"),))] == 5000.0
    assert got[("flowsh_run_last_end_timestamp_seconds", (("workflow", "w"),))] == 6000.0
    assert got[("flowsh_run_last_status", (("workflow", "w"),))] == 1
    assert [p.name for p in path.parent.iterdir()] == ["flowsh_w.prom"]


def test_paths(write_flow: Callable[..., Path], tmp_path: Path) -> None:
    off = load_workflow(write_flow("name: w\nsteps:\n  - {name: a, run: x}\n"))
    assert mp.textfile_path(off) is None  # off by default
    f = load_workflow(write_flow("name: w\nmonitor: {prometheus: m/x.prom}\nsteps:\n  - {name: a, run: x}\n", name="f.yaml"))
    assert mp.textfile_path(f) == tmp_path.resolve() / "m/x.prom"


def test_push_to_a_real_gateway(write_flow: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> None:
    wf = load_workflow(write_flow("name: w\nsteps:\n  - {name: a, run: x}\n"))
    with serve([200]) as srv:
        assert mp.push_url(wf, {"metrics_push": srv.url}) == srv.url
        monkeypatch.setenv(mp.PUSH_ENV, srv.url + "/")
        run = _run(SUCCEEDED, 5000.0, name="w")
        mp.flowsh_run_finished(ctx=RunContext(run=run, workflow=wf, masker=Masker(),  # type: ignore[arg-type]
                                              run_dir=Path("/nonexistent")),
                               run=run, workflow=wf)  # type: ignore[arg-type]
    (req,) = srv.requests
    assert req.method == "PUT" and req.path == "/metrics/job/flowsh/workflow@base64/dw"
    assert _samples(req.body.decode())[("flowsh_run_last_status", (("workflow", "w"),))] == 0


def test_push_failure_is_a_warning(write_flow: Callable[..., Path],
                                   capsys: pytest.CaptureFixture[str]) -> None:
    wf = load_workflow(write_flow("name: w\nsteps:\n  - {name: a, run: x}\n"))
    with serve([500]) as srv:
        run = _run(SUCCEEDED, 5000.0, name="w")
        mp.flowsh_run_finished(ctx=RunContext(run=run, workflow=wf, masker=Masker(),  # type: ignore[arg-type]
                                              run_dir=Path("/nonexistent"),
                                              options={"metrics_push": srv.url}),
                               run=run, workflow=wf)  # type: ignore[arg-type]
    assert "Pushgateway" in capsys.readouterr().err
