"""Built-in plugin: Prometheus metrics, the seed's `collect_metrics` done properly.

At the end of each run it writes ``flowsh_<identity>.prom`` for node_exporter's textfile
collector (one file per workflow, so workflows sharing the directory never overwrite each
other), atomically: temp file in the same directory, then rename. With ``monitor.push`` or
``$FLOWSH_METRICS_PUSH`` (``flowsh run --metrics-push URL``) it also PUTs the same metrics
to a Pushgateway, for hosts without node_exporter.

``monitor.prometheus``: true = ``$FLOWSH_HOME/metrics/``, false = off, a directory, or a
file path ending in ``.prom``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from flowsh import hookimpl, monitorfiles
from flowsh.state import MAX_TIME, SUCCEEDED

if TYPE_CHECKING:
    from flowsh.events import RunContext
    from flowsh.model import Workflow
    from flowsh.state import RunRecord

PUSH_ENV = "FLOWSH_METRICS_PUSH"
PUSH_TIMEOUT = 10.0
# node_exporter runs as its own user and must read the file; it holds names and numbers only.
TEXTFILE_MODE = 0o644

# How a run's status is reported in flowsh_run_last_status: its exit code.
_STATUS_HELP = "Exit status of the last run: 0 succeeded, 1 failed, 130 interrupted."


@dataclass(frozen=True)
class Family:
    name: str
    help: str
    labels: tuple[str, ...]


RUN_DURATION = Family(
    "flowsh_run_duration_seconds", "Wall-clock duration of the last run.", ("workflow",)
)
RUN_LAST_SUCCESS = Family(
    "flowsh_run_last_success_timestamp_seconds",
    "Unix time the last successful run ended.", ("workflow",),
)
RUN_LAST_END = Family(
    "flowsh_run_last_end_timestamp_seconds", "Unix time the last run ended.", ("workflow",)
)
RUN_LAST_STATUS = Family("flowsh_run_last_status", _STATUS_HELP, ("workflow",))
STEP_DURATION = Family(
    "flowsh_step_duration_seconds",
    "Duration of the step's last attempt in the last run.",
    ("workflow", "step"),
)
STEP_ATTEMPTS = Family(
    "flowsh_step_attempts", "Attempts the step took in the last run (0: skipped).",
    ("workflow", "step"),
)
STEP_SUCCESS = Family(
    "flowsh_step_last_success", "1 if the step succeeded in the last run, else 0.",
    ("workflow", "step"),
)
RUN_LAST_START = Family(
    "flowsh_run_last_start_timestamp_seconds", "Unix time the last run started.",
    ("workflow",),
)
# Written when a run starts as well as when it ends (DEADLINE-4): Prometheus alerts on a
# run that has not finished by its deadline, and on a slot whose run never started.
RUN_DEADLINE = Family(
    "flowsh_run_deadline_timestamp_seconds",
    "Unix time the last (or current) run must be done by (`deadline`).", ("workflow",),
)
SCHEDULE_NEXT = Family(
    "flowsh_schedule_next_expected_timestamp_seconds",
    "Unix time of the schedule's next fire time after the last run started or ended.",
    ("workflow",),
)
FAMILIES = (
    RUN_DURATION, RUN_LAST_SUCCESS, RUN_LAST_END, RUN_LAST_STATUS,
    STEP_DURATION, STEP_ATTEMPTS, STEP_SUCCESS, RUN_LAST_START, RUN_DEADLINE, SCHEDULE_NEXT,
)
# What a run's start writes; the rest of the file stays as the last run left it.
START_FAMILIES = (RUN_LAST_START, RUN_DEADLINE, SCHEDULE_NEXT)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


def textfile_path(workflow: Workflow) -> Path | None:
    path = monitorfiles.resolve(workflow.monitor.prometheus, "metrics", workflow)
    if path is None:
        return None
    return path if path.suffix == ".prom" else path / f"flowsh_{workflow.identity}.prom"


def _previous_success(path: Path | None, workflow: str) -> float | None:
    """Keep the last success time across failed runs: read it from our own last file."""
    if path is None:
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return None
    pattern = re.compile(
        rf'^{RUN_LAST_SUCCESS.name}\{{workflow="{re.escape(_escape(workflow))}"\}} (\S+)$', re.M
    )
    m = pattern.search(text)
    try:
        value = float(m.group(1)) if m else None
    except ValueError:
        return None
    # The file may have been edited or half-copied: NaN, +Inf or a time past year 9999 is
    # not a success time, and would be carried into every later file.
    if value is None or not 0 <= value <= MAX_TIME:
        return None
    return value


Samples = dict[Family, list[tuple[tuple[str, ...], float]]]


def _timing(run: RunRecord, times: dict[Family, float | None]) -> Samples:
    samples: Samples = {f: [] for f in FAMILIES}
    if run.started_at:
        samples[RUN_LAST_START].append(((run.workflow,), run.started_at))
    for fam, value in times.items():
        if value is not None:
            samples[fam].append(((run.workflow,), value))
    return samples


def render(run: RunRecord, last_success: float | None = None,
           times: dict[Family, float | None] | None = None) -> str:
    """The exposition text for one finished run of one workflow (`times`: its deadline
    and the schedule's next fire time)."""
    samples = _timing(run, times or {})
    wf = (run.workflow,)
    if run.duration is not None:
        samples[RUN_DURATION].append((wf, run.duration))
    if run.status == SUCCEEDED and run.ended_at is not None:
        last_success = run.ended_at
    if last_success is not None:
        samples[RUN_LAST_SUCCESS].append((wf, last_success))
    if run.ended_at is not None:
        samples[RUN_LAST_END].append((wf, run.ended_at))
    samples[RUN_LAST_STATUS].append((wf, float(run.exit_code if run.exit_code is not None else 1)))
    for name in run.step_names or list(run.steps):
        step = run.steps.get(name)
        if step is None:
            continue
        labels = (run.workflow, name)
        if step.duration is not None and step.attempts:
            samples[STEP_DURATION].append((labels, step.duration))
        samples[STEP_ATTEMPTS].append((labels, float(step.attempts)))
        samples[STEP_SUCCESS].append((labels, 1.0 if step.status == SUCCEEDED else 0.0))
    return _text(samples)


def _text(samples: Samples) -> str:
    lines: list[str] = []
    for fam in FAMILIES:
        if not samples[fam]:
            continue
        lines.append(f"# HELP {fam.name} {fam.help}")
        lines.append(f"# TYPE {fam.name} gauge")
        for values, number in samples[fam]:
            label_text = ",".join(
                f'{k}="{_escape(v)}"' for k, v in zip(fam.labels, values, strict=True)
            )
            lines.append(f"{fam.name}{{{label_text}}} {_number(number)}")
    return "\n".join(lines) + "\n"


def push_url(workflow: Workflow, options: dict[str, object] | None = None) -> str | None:
    """``flowsh run --metrics-push``, then ``$FLOWSH_METRICS_PUSH``, then ``monitor.push``."""
    asked = (options or {}).get("metrics_push")
    return (asked if isinstance(asked, str) else None) or os.environ.get(PUSH_ENV) \
        or workflow.monitor.push


def push(base_url: str, workflow: str, text: str, timeout: float = PUSH_TIMEOUT) -> None:
    """PUT to the Pushgateway group job=flowsh,workflow=NAME (replacing its last push)."""
    import urllib.request
    from base64 import urlsafe_b64encode

    base = base_url.rstrip("/")
    if not base.endswith("/metrics"):
        base += "/metrics"
    # Workflow names are [A-Za-z0-9_.-], safe in a path; base64 keeps that true regardless.
    encoded = urlsafe_b64encode(workflow.encode()).decode().rstrip("=")
    url = f"{base}/job/flowsh/workflow@base64/{encoded}"
    req = urllib.request.Request(
        url, data=text.encode("utf-8"), method="PUT",
        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
    )
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        resp.read()


def times_of(ctx: RunContext) -> dict[Family, float | None]:
    """The run's deadline and the schedule's next fire time after now, as Unix times."""
    from flowsh.deadline import next_expected, of_run
    from flowsh.plugins import warn

    schedule = list(ctx.workflow.schedule)
    try:
        due = of_run(ctx)
        nxt = None
        # slot.py and cron.py only then (this is on every run's way out); with the test
        # clock set (slot.NOW_VAR) always, so a bad one is warned of as it always was.
        if schedule or "FLOWSH_NOW" in os.environ:
            from flowsh.slot import now

            nxt = next_expected(schedule, now())
    except Exception as exc:  # a bad FLOWSH_NOW: the metrics go out without these
        warn(f"deadline metrics: {exc}")
        return {}
    return {RUN_DEADLINE: due.timestamp() if due else None,
            SCHEDULE_NEXT: nxt.timestamp() if nxt else None}


def _keep_previous(path: Path | None) -> str:
    """The last run's file without the families a start rewrites."""
    if path is None:
        return ""
    try:
        old = path.read_text(encoding="utf-8")
    except OSError:
        return ""
    names = {f.name for f in START_FAMILIES}
    kept = []
    for line in old.splitlines():
        words = line.split()
        name = words[2] if line.startswith("#") and len(words) > 2 else line.split("{")[0]
        if name not in names:
            kept.append(line)
    return "\n".join(kept) + "\n" if kept else ""


@hookimpl
def flowsh_run_started(ctx: RunContext, run: RunRecord, workflow: Workflow) -> None:
    if not (workflow.deadline or workflow.schedule):
        return  # nothing to say before the end: one write (and one push) per run, as ever
    path = textfile_path(workflow)
    if path is None and not push_url(workflow, ctx.options):
        return
    text = _keep_previous(path) + _text(_timing(run, times_of(ctx)))
    _write(ctx, workflow, run, path, text)


@hookimpl
def flowsh_run_finished(ctx: RunContext, run: RunRecord, workflow: Workflow) -> None:
    path = textfile_path(workflow)
    text = render(run, _previous_success(path, run.workflow), times_of(ctx))
    _write(ctx, workflow, run, path, text)


def _write(ctx: RunContext, workflow: Workflow, run: RunRecord, path: Path | None,
           text: str) -> None:
    from flowsh.plugins import warn

    if path is not None:
        try:
            monitorfiles.write_creating_dir(path, text, mode=TEXTFILE_MODE)
        except OSError as exc:
            warn(f"Prometheus textfile {path}: {exc.strerror or exc}")
    url = push_url(workflow, ctx.options)
    if url:
        try:
            push(url, run.workflow, text)
        except Exception as exc:  # network trouble must not fail a run that succeeded
            warn(f"Pushgateway {url}: {type(exc).__name__}: {exc}")
