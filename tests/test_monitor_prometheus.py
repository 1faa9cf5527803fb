"""Prometheus textfile and Pushgateway push, checked with prometheus_client's own parser."""

from __future__ import annotations

import stat
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from flowsh.builtin import metrics_prometheus as mp
from flowsh.state import flowsh_home
from tests.conftest import emit_event
from tests.monitor_helpers import make_run, write_workflow


def _parse(text: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for fam in text_string_to_metric_families(text):
        out[fam.name] = fam
    return out


def _value(fams: dict[str, Any], name: str, **labels: str) -> float:
    for sample in fams[name].samples:
        if sample.labels == labels:
            return float(sample.value)
    raise KeyError((name, labels))


def test_textfile_parses_with_help_type_and_labels(tmp_path: Path) -> None:
    wf = write_workflow(tmp_path)
    run = make_run(wf, steps={"extract": {"attempts": 3, "duration": 2.5},
                              "report": {"status": "skipped"}})
    emit_event("flowsh_run_finished", run=run, workflow=wf)

    path = flowsh_home() / "metrics" / "flowsh_etl.prom"
    text = path.read_text()
    fams = _parse(text)
    for name in ("flowsh_run_duration_seconds", "flowsh_run_last_success_timestamp_seconds",
                 "flowsh_run_last_status", "flowsh_step_duration_seconds",
                 "flowsh_step_attempts"):
        assert fams[name].type == "gauge"
        assert fams[name].documentation
        assert f"# HELP {name} " in text and f"# TYPE {name} gauge" in text
    assert _value(fams, "flowsh_run_duration_seconds", workflow="etl") == pytest.approx(
        run.ended_at - run.started_at)
    assert _value(fams, "flowsh_run_last_success_timestamp_seconds", workflow="etl") == \
        run.ended_at
    assert _value(fams, "flowsh_run_last_status", workflow="etl") == 0
    assert _value(fams, "flowsh_step_duration_seconds", workflow="etl", step="extract") == 2.5
    assert _value(fams, "flowsh_step_attempts", workflow="etl", step="extract") == 3
    assert _value(fams, "flowsh_step_attempts", workflow="etl", step="report") == 0
    with pytest.raises(KeyError):  # a skipped step has no duration
        _value(fams, "flowsh_step_duration_seconds", workflow="etl", step="report")
    # node_exporter (its own user) must read it; nothing but the .prom is left behind.
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in path.parent.iterdir()] == ["flowsh_etl.prom"]


def test_failed_run_keeps_last_success_time_and_other_workflows(tmp_path: Path) -> None:
    wf = write_workflow(tmp_path)
    good = make_run(wf, "r1", start=1_700_000_000.0)
    emit_event("flowsh_run_finished", run=good, workflow=wf)
    other = write_workflow(tmp_path, "name: other\nmonitor: {prometheus: true}\n"
                           "steps: [{name: a, run: 'true'}]\n", "other.yaml")
    emit_event("flowsh_run_finished", run=make_run(other), workflow=other)
    bad = make_run(wf, "r2", start=1_700_100_000.0, status="failed",
                   steps={"load": {"status": "failed", "exit_code": 1}})
    emit_event("flowsh_run_finished", run=bad, workflow=wf)

    fams = _parse((flowsh_home() / "metrics" / "flowsh_etl.prom").read_text())
    assert _value(fams, "flowsh_run_last_status", workflow="etl") == 1
    assert _value(fams, "flowsh_run_last_success_timestamp_seconds", workflow="etl") == \
        good.ended_at
    assert _value(fams, "flowsh_run_last_end_timestamp_seconds", workflow="etl") == bad.ended_at
    assert (flowsh_home() / "metrics" / "flowsh_other.prom").exists()


def test_label_values_are_escaped(tmp_path: Path) -> None:
    wf = write_workflow(tmp_path)
    run = make_run(wf)
    run.workflow = 'we"ird\\name\nx'
    fams = _parse(mp.render(run))
    assert _value(fams, "flowsh_run_last_status", workflow='we"ird\\name\nx') == 0


def test_prometheus_off_by_default_and_custom_path(tmp_path: Path) -> None:
    off = write_workflow(tmp_path, "name: nometrics\nsteps: [{name: a, run: 'true'}]\n", "off.yaml")
    emit_event("flowsh_run_finished", run=make_run(off), workflow=off)
    assert not (flowsh_home() / "metrics").exists()

    file_wf = write_workflow(tmp_path, "name: f\nmonitor: {prometheus: textfile/custom.prom}\n"
                             "steps: [{name: a, run: 'true'}]\n", "f.yaml")
    emit_event("flowsh_run_finished", run=make_run(file_wf), workflow=file_wf)
    assert "flowsh_run_last_status" in (tmp_path / "textfile" / "custom.prom").read_text()


class _Recorder(BaseHTTPRequestHandler):
    requests: list[tuple[str, str, dict[str, str], bytes]] = []
    status = 200

    def do_PUT(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).requests.append((self.command, self.path, dict(self.headers), body))
        self.send_response(self.status)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def gateway() -> Iterator[tuple[str, type[_Recorder]]]:
    handler = type("Handler", (_Recorder,), {"requests": [], "status": 200})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


def test_push_to_pushgateway_from_env(
    tmp_path: Path, gateway: tuple[str, type[_Recorder]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, handler = gateway
    monkeypatch.setenv("FLOWSH_METRICS_PUSH", url)
    wf = write_workflow(tmp_path, "name: etl\nsteps: [{name: a, run: 'true'}]\n")
    emit_event("flowsh_run_finished", run=make_run(wf), workflow=wf)

    assert len(handler.requests) == 1
    method, path, headers, body = handler.requests[0]
    assert method == "PUT"
    assert path == "/metrics/job/flowsh/workflow@base64/ZXRs"  # base64("etl")
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    fams = _parse(body.decode())
    assert _value(fams, "flowsh_step_attempts", workflow="etl", step="a") == 1
    assert not (flowsh_home() / "metrics").exists()  # push alone writes no textfile


def test_push_from_workflow_and_gateway_errors_do_not_raise(
    tmp_path: Path, gateway: tuple[str, type[_Recorder]], capsys: pytest.CaptureFixture[str]
) -> None:
    url, handler = gateway
    handler.status = 500
    wf = write_workflow(tmp_path, f"name: etl\nmonitor: {{push: '{url}/'}}\n"
                        "steps: [{name: a, run: 'true'}]\n")
    emit_event("flowsh_run_finished", run=make_run(wf), workflow=wf)  # must not raise
    assert len(handler.requests) == 1
    assert "Pushgateway" in capsys.readouterr().err

    dead = write_workflow(tmp_path, "name: etl\nmonitor: {push: 'http://127.0.0.1:9'}\n"
                          "steps: [{name: a, run: 'true'}]\n")
    emit_event("flowsh_run_finished", run=make_run(dead), workflow=dead)
    assert "Pushgateway http://127.0.0.1:9" in capsys.readouterr().err


@pytest.mark.parametrize("runtime", ["run", "script"])
def test_two_files_with_one_stem_keep_two_textfiles(tmp_path: Path, runtime: str) -> None:
    """Identity, not the bare stem, names the file and the label: two unrelated
    nightly.yaml must not overwrite each other's metrics (docs/semantics.md, identity)."""
    from flowsh.loader import load_workflow
    from tests.exportkit import export_script, run_engine, run_script

    text = "monitor: {prometheus: true}\nsteps: [{name: a, run: 'true'}]\n"
    ids = []
    for d in ("a", "b"):
        path = tmp_path / d / "nightly.yaml"
        path.parent.mkdir()
        path.write_text(text)
        ids.append(load_workflow(path).identity)
        if runtime == "run":
            assert run_engine(path)[0] == 0
        else:
            assert run_script(export_script(path)).returncode == 0
    assert ids[0] != ids[1] and all(i.startswith("nightly-") for i in ids)
    for ident in ids:
        fams = _parse((flowsh_home() / "metrics" / f"flowsh_{ident}.prom").read_text())
        assert _value(fams, "flowsh_run_last_status", workflow=ident) == 0


@pytest.mark.parametrize("garbage", ["NaN", "+Inf", "1e300", "-5"])
def test_a_garbage_last_success_time_in_the_old_file_is_not_carried_on(
    tmp_path: Path, garbage: str
) -> None:
    """rt11 #15 (numbers read back): the previous file's success time is only kept when it
    is a time; NaN or +Inf would go into every later file."""
    path = tmp_path / "flowsh_w.prom"
    path.write_text(f'{mp.RUN_LAST_SUCCESS.name}{{workflow="w"}} {garbage}\n')
    assert mp._previous_success(path, "w") is None
    path.write_text(f'{mp.RUN_LAST_SUCCESS.name}{{workflow="w"}} 1764900000.5\n')
    assert mp._previous_success(path, "w") == 1764900000.5


@pytest.mark.parametrize(("schedule", "clock"), [
    ("", "bogus"), ("schedule: '0 2 * * *'\n", "bogus-too"),  # plugins.warn says each once
])
def test_a_bad_test_clock_is_warned_of_with_or_without_a_schedule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    schedule: str, clock: str,
) -> None:
    """A workflow without a schedule reads no clock for its metrics, but FLOWSH_NOW set
    wrong is still said (the import of slot.py is saved only when it is unset)."""
    monkeypatch.setenv("FLOWSH_NOW", clock)
    wf = write_workflow(tmp_path, f"monitor: {{prometheus: true}}\n{schedule}"
                                  "steps: [{name: a, run: 'true'}]\n")
    emit_event("flowsh_run_finished", run=make_run(wf), workflow=wf)
    assert f"deadline metrics: FLOWSH_NOW: '{clock}' is not an RFC 3339 time" in \
        capsys.readouterr().err
