"""flowsh.deadline: when a run is due, run_late's timer, and the deadline metrics."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime
from datetime import time as clock
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from flowsh.builtin import alerts
from flowsh.builtin import metrics_prometheus as mp
from flowsh.deadline import due, next_expected, of_run, parse_deadline
from flowsh.events import RunContext
from flowsh.loader import load_workflow
from flowsh.model import LATER_KEYS, definition_json, json_schema
from flowsh.secrets import Masker
from flowsh.state import RUNNING, SUCCEEDED, StepRecord

from . import backend_cases as cases

PARIS = ["CRON_TZ=Europe/Paris 0 2 * * *"]


def t(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_parse() -> None:
    assert parse_deadline("06:00") == clock(6, 0)
    assert parse_deadline("23:59:59") == clock(23, 59, 59)
    assert parse_deadline("4h") == 14400.0
    for bad, why in ((360, "bare number"), (1.5, "bare number"), ("24:00", "HH:MM"), ("6:0", "HH:MM"), ("0s", "more than 0"),
                     ("soon", "invalid duration"), ("400d", "out of range")):
        with pytest.raises(ValueError, match=why):
            parse_deadline(bad)


def test_due_time_of_day_in_the_schedule_zone() -> None:
    slot = t("2026-12-05T02:00:00+01:00")
    assert due("06:00", slot, PARIS) == t("2026-12-05T06:00:00+01:00")
    assert due("02:00", slot, PARIS) == slot  # at or after the slot
    assert due("01:00", slot, PARIS) == t("2026-12-06T01:00:00+01:00")  # the next day's
    assert due("06:00", slot, ["CRON_TZ=UTC 0 1 * * *"]) == t("2026-12-05T06:00:00+00:00")
    assert due("4h", slot, PARIS) == t("2026-12-05T06:00:00+01:00")
    # 02:30 does not exist in Paris on 2026-03-29 (clocks go 02:00 -> 03:00): one hour on.
    got = due("02:30", t("2026-03-29T01:00:00+01:00"), PARIS)
    assert got == t("2026-03-29T03:30:00+02:00")


NY_HOURLY = ["CRON_TZ=America/New_York 40 * * * *"]


def test_due_in_the_repeated_hour_is_that_hour_not_the_next_day() -> None:
    # 2026-11-01 01:00-01:59 happens twice in New York: the second 01:40 is due 01:50 then.
    second = t("2026-11-01T01:40:00-05:00")
    # Timestamps: PEP 495 makes == across zones False in a repeated hour.
    assert due("01:50", second, NY_HOURLY).timestamp() == t("2026-11-01T01:50:00-05:00").timestamp()
    first = t("2026-11-01T01:40:00-04:00")
    assert due("01:50", first, NY_HOURLY).timestamp() == t("2026-11-01T01:50:00-04:00").timestamp()


def test_next_expected_skips_the_repeated_time_of_a_fixed_hour() -> None:
    def at(expr: str) -> float:
        got = next_expected([f"CRON_TZ=America/New_York {expr}"], t("2026-11-01T01:35:00-04:00"))
        assert got is not None
        return got.timestamp()

    assert at("30 1 * * *") == t("2026-11-02T01:30:00-05:00").timestamp()
    assert at("30 * * * *") == t("2026-11-01T01:30:00-05:00").timestamp()  # both (SLOT-1)


def test_next_expected() -> None:
    after = t("2026-12-05T02:00:00+00:00")
    assert next_expected(["CRON_TZ=UTC 0 2 * * *"], after) == t("2026-12-06T02:00:00+00:00")
    assert next_expected(["CRON_TZ=UTC 0 2 * * *", "CRON_TZ=UTC 30 3 * * *"], after) == \
        t("2026-12-05T03:30:00+00:00")
    assert next_expected([], after) is None


def _ctx(write_flow: Callable[..., Path], text: str, slot: str | None = None
         ) -> RunContext:
    wf = load_workflow(write_flow(text))
    run = cases.record("dl1", workflow=wf.name)
    run.scheduled_time = slot
    run.started_at = time.time()
    run.steps = {"a": StepRecord("a", status=RUNNING)}
    return RunContext(run=run, workflow=wf, masker=Masker(), run_dir=Path("/nonexistent"))


def test_of_run_slot_or_start(write_flow: Callable[..., Path],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWSH_NOW", "2026-12-05T10:00:00Z")
    ctx = _ctx(write_flow, "deadline: 4h\nsteps: [{name: a, run: x}]\n",
               "2026-12-05T02:00:00+00:00")
    assert of_run(ctx) == t("2026-12-05T06:00:00+00:00")
    ctx = _ctx(write_flow, "deadline: 4h\nsteps: [{name: a, run: x}]\n")
    assert of_run(ctx) == t("2026-12-05T14:00:00+00:00")  # no slot: from the start
    ctx = _ctx(write_flow, "steps: [{name: a, run: x}]\n")
    assert of_run(ctx) is None


FLOW = """
name: w
deadline: "06:00"
schedule: "CRON_TZ=UTC 0 2 * * *"
monitor: {prometheus: true}
notify:
  channels: {ops: {type: log, path: alerts.jsonl, format: json}}
  events: {run_late: critical}
steps: [{name: a, run: x}]
"""


def _sent(tmp_path: Path) -> list[dict]:  # type: ignore[type-arg]
    p = tmp_path / "alerts.jsonl"
    return [json.loads(ln) for ln in p.read_text().splitlines()] if p.exists() else []


def test_run_late_at_start_when_already_past(write_flow: Callable[..., Path], tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWSH_NOW", "2026-12-05T07:00:00Z")
    ctx = _ctx(write_flow, FLOW, "2026-12-05T02:00:00+00:00")
    alerts.flowsh_run_started(ctx=ctx)
    end = time.monotonic() + 20
    while not _sent(tmp_path) and time.monotonic() < end:
        time.sleep(0.05)
    (late,) = _sent(tmp_path)
    assert late["event"] == "run_late" and late["severity"] == "critical"
    assert late["message"] == ("run dl1 is still running past its deadline "
                               "2026-12-05T06:00:00+00:00; running: a")
    ctx.run.status = SUCCEEDED
    alerts.flowsh_run_finished(ctx=ctx)
    assert len(_sent(tmp_path)) == 1  # once


def test_run_late_cancelled_when_the_run_ends_first(write_flow: Callable[..., Path],
                                                    tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWSH_NOW", "2026-12-05T03:00:00Z")
    ctx = _ctx(write_flow, FLOW, "2026-12-05T02:00:00+00:00")
    alerts.flowsh_run_started(ctx=ctx)
    timer = ctx.slot("alerts")["late_timer"]
    assert timer.is_alive()
    ctx.run.status = SUCCEEDED
    alerts.flowsh_run_finished(ctx=ctx)
    assert not timer.is_alive() and _sent(tmp_path) == []


def _samples(text: str) -> dict[str, float]:
    return {s.name: s.value for fam in text_string_to_metric_families(text)
            for s in fam.samples if s.labels.get("step") is None}


def test_metrics_written_at_start_keep_the_last_run(write_flow: Callable[..., Path],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWSH_NOW", "2026-12-05T02:10:00Z")
    ctx = _ctx(write_flow, FLOW, "2026-12-05T02:00:00+00:00")
    run, wf = ctx.run, ctx.workflow
    path = mp.textfile_path(wf)
    assert path is not None
    run.status, run.exit_code, run.ended_at = SUCCEEDED, 0, run.started_at + 5
    mp.flowsh_run_finished(ctx=ctx, run=run, workflow=wf)
    ended = _samples(path.read_text())
    deadline = t("2026-12-05T06:00:00+00:00").timestamp()
    nxt = t("2026-12-06T02:00:00+00:00").timestamp()
    assert ended["flowsh_run_deadline_timestamp_seconds"] == deadline
    assert ended["flowsh_schedule_next_expected_timestamp_seconds"] == nxt
    # The next run starts (the day after): its deadline is written now, the rest kept.
    monkeypatch.setenv("FLOWSH_NOW", "2026-12-06T02:10:00Z")
    ctx2 = _ctx(write_flow, FLOW, "2026-12-06T02:00:00+00:00")
    ctx2.run.started_at = run.started_at + 100
    mp.flowsh_run_started(ctx=ctx2, run=ctx2.run, workflow=wf)
    started = _samples(path.read_text())
    assert started["flowsh_run_deadline_timestamp_seconds"] == deadline + 86400
    assert started["flowsh_schedule_next_expected_timestamp_seconds"] == nxt + 86400
    assert started["flowsh_run_last_start_timestamp_seconds"] == run.started_at + 100
    assert started["flowsh_run_last_end_timestamp_seconds"] == run.ended_at
    assert started["flowsh_run_last_status"] == 0
    # The did-not-finish rule's condition: the last end is before the last start.
    assert started["flowsh_run_last_end_timestamp_seconds"] < \
        started["flowsh_run_last_start_timestamp_seconds"]
    assert path.read_text().count("# TYPE flowsh_run_deadline_timestamp_seconds") == 1


def test_no_start_write_without_deadline_or_schedule(write_flow: Callable[..., Path]) -> None:
    ctx = _ctx(write_flow, "name: w\nmonitor: {prometheus: true}\nsteps: [{name: a, run: x}]\n")
    mp.flowsh_run_started(ctx=ctx, run=ctx.run, workflow=ctx.workflow)
    path = mp.textfile_path(ctx.workflow)
    assert path is not None and not path.exists()


def test_model_key(write_flow: Callable[..., Path]) -> None:
    assert "deadline" in LATER_KEYS and "deadline" in json_schema()["properties"]
    plain = load_workflow(write_flow("steps: [{name: a, run: x}]\n"))
    assert '"deadline"' not in definition_json(plain)  # old definition hashes stay the same
    wf = load_workflow(write_flow("deadline: 06:00\nsteps: [{name: a, run: x}]\n"))
    assert wf.deadline == "06:00" and '"deadline":"06:00"' in definition_json(wf)
