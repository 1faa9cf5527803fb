"""`flowsh report`: one self-contained HTML page about one run.

The page holds the DAG coloured by step state, a timeline (Gantt) of steps and their
retries, durations against the workflow's history, and each step's log tail with secrets
masked. Everything is inline (CSS, SVG); nothing is fetched when it is opened, so it can be
mailed, attached to a ticket, or opened on an air-gapped box.

Geometry is computed here; templates/report/report.html.j2 only draws it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flowsh.durations import format_duration
from flowsh.fileio import tail_lines
from flowsh.graph import Graph
from flowsh.loader import load_workflow
from flowsh.monitorfiles import events_path as events_path_of
from flowsh.monitorfiles import read_events
from flowsh.secrets import Masker
from flowsh.state import RunRecord, StepRecord, display_order, instance_parent
from flowsh.stats import WorkflowStats, compute
from flowsh.templating import templates_dir

if TYPE_CHECKING:
    from flowsh.model import Workflow

TAIL_LINES = 40
_TAIL_BYTES = 64 * 1024

NODE_W, NODE_H, H_GAP, V_GAP, PAD = 170, 52, 70, 22, 16
DAG_MAX_W = 1170  # the graph box in a 1280 px window (main, section padding and borders)
MIN_NODE_W, MIN_H_GAP = 130, 34
# "Slower than usual" needs both: above p95 by a ratio (20 % over p50) and by an absolute
# amount (half a second). A 28 ms step against a 17 ms median is +67 %, and noise: process
# start-up and a busy machine move millisecond steps by that much.
SLOW_RATIO, SLOW_FLOOR = 1.2, 0.5
GANTT_LABEL_W, GANTT_W, ROW_H, BAR_H, AXIS_H = 170, 900, 30, 18, 26


@dataclass
class Segment:
    """One attempt of a step on the timeline."""

    start: float
    end: float
    attempt: int
    status: str  # the attempt's outcome: failed (retried), or the step's final status


@dataclass
class ReportStep:
    name: str
    record: StepRecord
    needs: list[str]
    segments: list[Segment] = field(default_factory=list)
    tail: str = ""
    tail_truncated: bool = False
    hist_p50: float | None = None
    hist_p95: float | None = None


def _parse_time(text: Any) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except (ValueError, OverflowError):
        return None


def _attempt(value: Any, default: int) -> int:
    """An event's attempt number; the event log is a text file anyone can append to, so a
    garbage number (a string, NaN, 1e300) falls back to counting, never a traceback."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**31:
        return value
    return default


def segments_from_events(events: list[dict[str, Any]], step: StepRecord) -> list[Segment]:
    """Each attempt's span from the JSON event log; one span from the record otherwise."""
    segs: list[Segment] = []
    open_start: float | None = None
    open_attempt = 0
    for ev in events:
        if ev.get("step") != step.name:
            continue
        t = _parse_time(ev.get("time"))
        if t is None:
            continue
        kind = ev.get("event")
        # The record's own times are exact; the event's time is when the hook ran.
        if kind == "step_started":
            open_start = _parse_time(ev.get("started_at")) or t
            open_attempt = _attempt(ev.get("attempt"), open_attempt + 1)
        elif kind in ("step_retrying", "step_finished") and open_start is not None:
            status = "failed" if kind == "step_retrying" else str(ev.get("status"))
            end = _parse_time(ev.get("ended_at")) or t
            segs.append(Segment(open_start, max(end, open_start), open_attempt, status))
            open_start = None
    if open_start is not None:  # still running (report of a live run)
        segs.append(Segment(open_start, time.time(), open_attempt, "running"))
    if not segs and step.started_at is not None:
        end = step.ended_at or time.time()
        segs.append(Segment(step.started_at, end, step.attempts or 1, step.status))
    return segs


def read_tail(path: str | None, masker: Masker, lines: int = TAIL_LINES) -> tuple[str, bool]:
    """The last `lines` lines of a log, masked; and whether anything was cut off."""
    got, cut = tail_lines(path, lines, _TAIL_BYTES)
    return masker("\n".join(got)), cut


def order_levels(levels: list[list[str]], needs: dict[str, list[str]]) -> list[list[str]]:
    """Order each level by the mean position of its dependencies (fewer crossing edges)."""
    out: list[list[str]] = []
    pos: dict[str, float] = {}
    for level in levels:
        def key(n: str) -> float:
            deps = [pos[d] for d in needs.get(n, []) if d in pos]
            return sum(deps) / len(deps) if deps else level.index(n)  # noqa: B023

        ordered = sorted(level, key=key) if out else list(level)
        for i, n in enumerate(ordered):
            pos[n] = i
        out.append(ordered)
    return out


def fit_widths(columns: int, max_width: float = DAG_MAX_W) -> tuple[float, float]:
    """(node width, gap) so `columns` levels fit the page, down to a readable minimum.

    A 6-step chain at the natural 170 + 70 px is 1402 px wide, wider than the graph's
    box in a 1280 px window (1170 px): the gaps shrink first (to 34), then the boxes (to
    130, names cut shorter). Past that the graph keeps its size and its own box scrolls
    sideways; the page never does.
    """
    def width(node: float, gap: float) -> float:
        return PAD * 2 + columns * node + (columns - 1) * gap

    node, gap = float(NODE_W), float(H_GAP)
    if width(node, gap) <= max_width or columns < 2:
        return node, gap
    gap = max(MIN_H_GAP, (max_width - PAD * 2 - columns * node) / (columns - 1))
    if width(node, gap) <= max_width:
        return node, gap
    node = max(MIN_NODE_W, (max_width - PAD * 2 - (columns - 1) * gap) / columns)
    return node, gap


def dag_layout(names: list[str], needs: dict[str, list[str]]) -> dict[str, Any]:
    """Left-to-right layout by graph level: node boxes and bezier edges."""
    levels = order_levels(Graph(names, needs).levels(), needs)
    node_w, h_gap = fit_widths(len(levels))
    tallest = max(len(level) for level in levels)
    height = PAD * 2 + tallest * NODE_H + (tallest - 1) * V_GAP
    nodes: dict[str, dict[str, float]] = {}
    for col, level in enumerate(levels):
        block = len(level) * NODE_H + (len(level) - 1) * V_GAP
        top = (height - block) / 2
        for row, name in enumerate(level):
            nodes[name] = {
                "x": PAD + col * (node_w + h_gap),
                "y": top + row * (NODE_H + V_GAP),
            }
    edges = []
    for name in names:
        for dep in needs.get(name, []):
            a, b = nodes[dep], nodes[name]
            x1, y1 = a["x"] + node_w, a["y"] + NODE_H / 2
            x2, y2 = b["x"] - 6, b["y"] + NODE_H / 2
            mid = (x1 + x2) / 2
            edges.append({
                "source": dep, "target": name,
                "d": f"M{x1:.1f},{y1:.1f} C{mid:.1f},{y1:.1f} {mid:.1f},{y2:.1f} {x2:.1f},{y2:.1f}",
            })
    width = PAD * 2 + len(levels) * node_w + (len(levels) - 1) * h_gap
    return {"width": width, "height": height, "nodes": nodes, "edges": edges,
            "node_w": node_w, "node_h": NODE_H,
            # 14 px bold names are ~8.3 px a character; 16 px of band and margin.
            "name_chars": max(8, int((node_w - 24) / 8.3))}


def is_slow(d: float | None, p50: float | None, p95: float | None) -> bool:
    """Flag a duration red: above p95, SLOW_RATIO over p50 and SLOW_FLOOR seconds over it."""
    if d is None or p95 is None:
        return False
    base = p50 or 0.0
    return d > p95 and d > base * SLOW_RATIO and d - base >= SLOW_FLOOR


def nice_step(span: float, target: int = 8) -> float:
    """A 1/2/5 x 10^k tick spacing giving about `target` ticks over `span` seconds."""
    if span <= 0:
        return 1.0
    raw = span / target
    if raw < 1:
        mag = 10 ** math.floor(math.log10(raw))
        return float(next(m * mag for m in (1, 2, 5, 10) if raw <= m * mag))
    for unit in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 43200):
        if raw <= unit:
            return float(unit)
    mag = 10 ** math.floor(math.log10(raw))
    return float(next(m * mag for m in (1, 2, 5, 10) if raw <= m * mag))


def gantt_layout(run: RunRecord, steps: list[ReportStep]) -> dict[str, Any]:
    timed = [s for s in steps if s.segments]
    t0 = run.started_at or min((s.segments[0].start for s in timed), default=0.0)
    ends = [seg.end for s in timed for seg in s.segments]
    t1 = max([run.ended_at or 0.0, *ends, t0 + 0.001])
    span = t1 - t0
    scale = GANTT_W / span
    step = nice_step(span)
    ticks = []
    t = 0.0
    while t <= span + 1e-9:
        ticks.append({"x": GANTT_LABEL_W + t * scale, "label": _tick_label(t, span)})
        t += step
    rows = []
    ordered = sorted(steps, key=lambda s: (s.segments[0].start if s.segments else math.inf))
    for i, s in enumerate(ordered):
        bars = []
        for seg in s.segments:
            x = GANTT_LABEL_W + (seg.start - t0) * scale
            w = max(2.0, (seg.end - seg.start) * scale)
            bars.append({
                "x": x, "w": w, "status": seg.status, "attempt": seg.attempt,
                "title": f"{s.name} attempt {seg.attempt}: {seg.status}, "
                         f"{format_duration(seg.end - seg.start)}",
            })
        gaps = []  # retry delays: between the end of one attempt and the start of the next
        for a, b in zip(s.segments, s.segments[1:], strict=False):
            if b.start > a.end:
                gaps.append({"x": GANTT_LABEL_W + (a.end - t0) * scale,
                             "w": (b.start - a.end) * scale})
        rows.append({"name": s.name, "y": AXIS_H + i * ROW_H, "bars": bars, "gaps": gaps,
                     "status": s.record.status})
    height = AXIS_H + len(rows) * ROW_H + 6
    return {"width": GANTT_LABEL_W + GANTT_W + 20, "height": height, "rows": rows,
            "ticks": ticks, "label_w": GANTT_LABEL_W, "row_h": ROW_H, "bar_h": BAR_H,
            "axis_h": AXIS_H}


def _tick_label(t: float, span: float) -> str:
    if span < 8:
        if span < 1:
            return f"{t * 1000:.0f}ms"
        return f"{t:.1f}s"
    if span < 120:
        return f"{t:.0f}s"
    if span < 7200:
        return f"{int(t // 60)}m{int(t % 60):02d}"
    return f"{int(t // 3600)}h{int(t % 3600 // 60):02d}"


def history_bars(run: RunRecord, history: list[RunRecord], n: int = 30) -> dict[str, Any]:
    """Durations of recent runs (oldest left), this run highlighted."""
    runs = sorted([*history[: n - 1], run], key=lambda r: r.started_at)
    durations = [(r, (r.ended_at or time.time()) - r.started_at) for r in runs if r.started_at]
    top = max((d for _, d in durations), default=1.0) or 1.0
    bar_w, gap, h = 14, 4, 60
    bars = []
    for i, (r, d) in enumerate(durations):
        bh = max(2.0, d / top * h)
        bars.append({
            "x": i * (bar_w + gap), "w": bar_w, "h": bh, "y": h - bh,
            "status": r.status, "current": r.run_id == run.run_id,
            "title": f"{r.run_id}: {r.status}, {format_duration(d)}",
        })
    return {"bars": bars, "width": max(1, len(bars) * (bar_w + gap)), "height": h}


def build_context(
    run: RunRecord,
    *,
    history: list[RunRecord],
    events: list[dict[str, Any]],
    needs: dict[str, list[str]] | None,
    masker: Masker,
    tail_lines: int = TAIL_LINES,
) -> dict[str, Any]:
    names = display_order(run)
    own = [n for n in names if instance_parent(n) is None]
    exact = needs is not None and set(needs) == set(own)
    if not exact:  # no workflow file to read dependencies from: show file order
        needs = {n: ([own[i - 1]] if i else []) for i, n in enumerate(own)}
    assert needs is not None
    # A foreach step's instances hang off it (FOREACH-8).
    needs = {**needs, **{n: [p] for n in names if (p := instance_parent(n)) is not None}}
    stats: WorkflowStats = compute(run.workflow, history)
    steps = []
    for n in names:
        rec = run.steps[n]
        s = ReportStep(n, rec, needs.get(n, []))
        s.segments = segments_from_events(events, rec)
        s.tail, s.tail_truncated = read_tail(rec.log_path, masker, tail_lines)
        if n in stats.steps:
            s.hist_p50, s.hist_p95 = stats.steps[n].p50, stats.steps[n].p95
        steps.append(s)
    max_dur = max(
        [s.record.duration or 0.0 for s in steps]
        + [s.hist_p95 or 0.0 for s in steps] + [0.001]
    )
    compare = []
    for s in steps:
        d = s.record.duration if s.record.attempts else None
        delta = None
        if d is not None and s.hist_p50:
            delta = (d - s.hist_p50) / s.hist_p50
        compare.append({
            "name": s.name, "status": s.record.status, "duration": d,
            "p50": s.hist_p50, "p95": s.hist_p95, "delta": delta,
            # Slower than usual: above p95, and by a margin that is not noise.
            "slow": is_slow(d, s.hist_p50, s.hist_p95),
            "w_cur": (d or 0.0) / max_dur * 100, "w_p50": (s.hist_p50 or 0.0) / max_dur * 100,
            "w_p95": (s.hist_p95 or 0.0) / max_dur * 100,
        })
    counts: dict[str, int] = {}
    for s in steps:
        counts[s.record.status] = counts.get(s.record.status, 0) + 1
    return {
        "run": run,
        "steps": steps,
        "dag": dag_layout(names, needs),
        "dag_exact": exact,
        "gantt": gantt_layout(run, steps),
        "compare": compare,
        "history": stats,
        "history_bars": history_bars(run, history),
        "counts": counts,
        "attempts": sum(s.record.attempts for s in steps),
        "retries": sum(max(0, s.record.attempts - 1) for s in steps),
        "fmt": format_duration,
        "when": lambda ts: "-" if ts is None else time.strftime(
            "%Y-%m-%d %H:%M:%S %Z", time.localtime(ts)),
        "generated": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "tail_lines": tail_lines,
    }


def render_html(context: dict[str, Any]) -> str:
    import jinja2

    folder = templates_dir() / "report"
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(folder)),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    return env.get_template("report.html.j2").render(**context)


def workflow_for(run: RunRecord) -> Workflow | None:
    """The run's workflow file as it is now, if it still loads."""
    if not run.file or not Path(run.file).is_file():
        return None
    try:
        return load_workflow(run.file)
    except Exception:  # changed or broken since the run: report without it
        return None


def generate(
    run: RunRecord,
    history: list[RunRecord],
    *,
    events_path: Path | None = None,
    tail_lines: int = TAIL_LINES,
) -> str:
    """The HTML page for `run` (history: other finished runs of the workflow, newest first)."""
    wf = workflow_for(run)
    needs = None
    if wf is not None and [s.name for s in wf.steps] == list(run.step_names or run.steps):
        needs = {s.name: list(s.needs or ()) for s in wf.steps}
    events = read_events(events_path or events_path_of(wf), run.run_id)
    context = build_context(
        run, history=history, events=events, needs=needs, masker=Masker.for_workflow(wf),
        tail_lines=tail_lines,
    )
    return render_html(context)
