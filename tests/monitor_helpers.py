"""RunRecords built by hand, for tests of the monitoring writers and renderers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flowsh.loader import load_workflow
from flowsh.model import Workflow
from flowsh.state import RunRecord, StepRecord

ETL_YAML = """\
name: etl
monitor: {prometheus: true}
steps:
  - name: extract
    run: echo extract
    retries: 2
  - name: transform
    run: echo transform
  - name: load
    run: echo load
  - name: report
    needs: [transform]
    run: echo report
"""


def write_workflow(tmp: Path, text: str = ETL_YAML, name: str = "etl.yaml") -> Workflow:
    path = tmp / name
    path.write_text(text)
    return load_workflow(path)


def make_run(
    wf: Workflow, run_id: str = "r1", *, start: float = 1_700_000_000.0,
    status: str = "succeeded", steps: dict[str, dict[str, Any]] | None = None,
) -> RunRecord:
    run = RunRecord(
        run_id=run_id, workflow=wf.name, file=wf.path, definition_hash="h", params={},
        status=status, pid=123, host="box", started_at=start,
        exit_code={"succeeded": 0, "failed": 1, "interrupted": 130}.get(status),
        step_names=[s.name for s in wf.steps],
    )
    t = start
    for s in wf.steps:
        spec = (steps or {}).get(s.name, {})
        dur = spec.get("duration", 1.0)
        rec = StepRecord(
            name=s.name, status=spec.get("status", "succeeded"),
            attempts=spec.get("attempts", 1), exit_code=spec.get("exit_code", 0),
            started_at=t, ended_at=t + dur, message=spec.get("message"),
            log_path=spec.get("log_path"),
        )
        if rec.status == "skipped":
            rec.attempts, rec.exit_code, rec.started_at, rec.ended_at = 0, None, None, None
        else:
            t += dur
        run.steps[s.name] = rec
    run.ended_at = t + 0.5
    return run
