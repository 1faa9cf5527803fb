"""`flowsh report`: layout, masking, self-containment, and rendering in real Chromium."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from flowsh.monitorfiles import rfc3339
from flowsh.report import dag_layout, generate, nice_step, order_levels, segments_from_events
from flowsh.state import StepRecord
from tests import report_browser as browser
from tests.monitor_helpers import make_run, write_workflow

DIAMOND = """\
name: etl
env: {API_TOKEN: tok-very-secret-123}
steps:
  - {name: extract, run: x, retries: 2}
  - {name: prices, run: x, needs: []}
  - {name: transform, run: x, needs: [extract, prices]}
  - {name: load, run: x}
  - {name: report, run: x, needs: [transform]}
"""


def _scenario(tmp_path: Path) -> tuple[str, Path]:
    """A failed run with a retried step, a history of 8 runs, logs and an event log."""
    wf = write_workflow(tmp_path, DIAMOND)
    logs = tmp_path / "logs"
    logs.mkdir()
    for n in ("extract", "prices", "transform", "load", "report"):
        lines = [f"{n} line {i} token=tok-very-secret-123" for i in range(80)]
        (logs / f"{n}.log").write_text("\n".join(lines) + "\n")
    history = [make_run(wf, f"h{i}", start=1_700_000_000.0 + i * 86400,
                        steps={"transform": {"duration": 20.0 + i}}) for i in range(8)]
    history.reverse()  # newest first, as the state backend lists them
    run = make_run(wf, "20261125T020000-ab12", start=1_700_000_000.0 + 9 * 86400,
                   status="failed", steps={
                       "extract": {"duration": 2.0, "attempts": 2},
                       "transform": {"duration": 60.0},
                       "load": {"status": "failed", "exit_code": 3,
                                "message": "exit code 3 <b>boom</b>"},
                       "report": {"status": "skipped"},
                   })
    for name, rec in run.steps.items():
        rec.log_path = str(logs / f"{name}.log")
    t = run.steps["extract"].started_at
    assert t is not None
    events = [
        {"event": "step_started", "run_id": run.run_id, "step": "extract", "attempt": 1,
         "time": rfc3339(t), "started_at": rfc3339(t)},
        {"event": "step_retrying", "run_id": run.run_id, "step": "extract", "attempt": 1,
         "status": "retrying", "time": rfc3339(t + 1), "ended_at": rfc3339(t + 1)},
        {"event": "step_started", "run_id": "other-run", "step": "extract", "attempt": 9,
         "time": rfc3339(t + 1.5)},
        {"event": "step_started", "run_id": run.run_id, "step": "extract", "attempt": 2,
         "time": rfc3339(t + 2), "started_at": rfc3339(t + 2)},
        {"event": "step_finished", "run_id": run.run_id, "step": "extract", "attempt": 2,
         "status": "succeeded", "time": rfc3339(t + 4), "ended_at": rfc3339(t + 4)},
    ]
    run.steps["extract"].started_at, run.steps["extract"].ended_at = t + 2, t + 4
    events_path = tmp_path / "events.jsonl"
    events_path.write_text("".join(json.dumps(e) + "\n" for e in events))
    html = generate(run, history, events_path=events_path, tail_lines=20)
    page = tmp_path / "report.html"
    page.write_text(html)
    return html, page


def test_report_content_and_self_contained(tmp_path: Path) -> None:
    html, _ = _scenario(tmp_path)
    # Nothing to fetch at view time.
    assert not re.search(r"https?://", html)
    assert not re.search(r"<(link|img|iframe|script)\b", html, re.I)
    assert all(u.startswith("url(#") for u in re.findall(r"url\([^)]*\)", html))
    # Secrets masked in log tails; only the tail is shown.
    assert "tok-very-secret-123" not in html
    assert "load line 79 token=***" in html
    assert "load line 59 " not in html and "load line 60 " in html
    # User text is escaped.
    assert "<b>boom</b>" not in html and "&lt;b&gt;boom&lt;/b&gt;" in html
    # DAG nodes by state, edges from the workflow's needs.
    assert '<g class="dag-node st-failed" data-step="load"' in html
    assert '<g class="dag-node st-skipped" data-step="report"' in html
    edges = set(re.findall(r'data-source="([^"]+)" data-target="([^"]+)"', html))
    assert edges == {("extract", "transform"), ("prices", "transform"),
                     ("transform", "load"), ("transform", "report")}
    # Two attempts of extract on the timeline, with the retry wait between them.
    row = html[html.index('<g class="gantt-row" data-step="extract"'):]
    row = row[:row.index("</g>")]
    assert row.count('class="gantt-bar') == 2
    assert 'class="gantt-bar st-failed" data-attempt="1"' in row
    assert 'class="gantt-bar st-succeeded" data-attempt="2"' in row
    assert 'class="retry-wait"' in row
    # transform took 60s against a p95 of ~26.65s: flagged slow.
    slow = r'<tr class="slow">\s*<td><span class="dot st-succeeded"></span>transform'
    assert re.search(slow, html)
    assert "of 8 earlier runs" in html


def test_layout_and_spans_helpers() -> None:
    needs = {"a": [], "b": [], "c": ["b"], "d": ["a"], "e": ["c", "d"]}
    levels = order_levels([["a", "b"], ["c", "d"], ["e"]], needs)
    assert levels[1] == ["d", "c"]  # follows its parents' order: fewer crossings
    layout = dag_layout(list(needs), needs)
    xs = {n: p["x"] for n, p in layout["nodes"].items()}
    assert xs["a"] == xs["b"] < xs["c"] == xs["d"] < xs["e"]
    assert nice_step(50) == 10 and nice_step(0.5) == pytest.approx(0.1)
    rec = StepRecord("s", status="succeeded", attempts=1, started_at=10.0, ended_at=12.0)
    [seg] = segments_from_events([], rec)
    assert (seg.start, seg.end, seg.status) == (10.0, 12.0, "succeeded")


@pytest.mark.skipif(browser.CHROMIUM is None, reason=browser.SKIP_REASON)
def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    _, page = _scenario(tmp_path)
    dom = browser.dump_dom(page)
    assert 'id="dag"' in dom and 'id="timeline"' in dom
    assert len(re.findall(r'<g class="dag-node ', dom)) == 5
    assert len(re.findall(r'<rect class="gantt-bar ', dom)) == 5  # extract twice + 3 more
    shot = tmp_path / "report.png"
    browser.screenshot(page, shot)
    width, height, pixels = browser.png_pixels(shot)
    assert (width, height) == (1280, 1600)
    # The colours the page paints only for states: red (failed node border, failed attempt
    # bar), green (succeeded bars), the dark log panel of the failed step (open by default).
    assert browser.count_colour(pixels, "#d64545") > 300
    assert browser.count_colour(pixels, "#1f9d55") > 3000
    assert browser.count_colour(pixels, "#dcf5e6") > 3000  # succeeded node fill
