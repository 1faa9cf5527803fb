"""Helpers for the export tests: copy a corpus workflow, run it with the engine and as an
exported script, and read both results in one shape."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

CORPUS = Path(__file__).resolve().parent / "corpus"

Steps = dict[str, tuple[str, int | None, dict[str, str]]]


def prepare(name: str, where: Path) -> Path:
    """A private copy of corpus workflow `name` (steps write files next to it)."""
    where.mkdir(parents=True, exist_ok=True)
    dst = where / f"{name}.yaml"
    shutil.copy(CORPUS / f"{name}.yaml", dst)
    return dst


def run_engine(path: Path, params: dict[str, str] | None = None) -> tuple[int, Steps]:
    from flowsh.engine import RunOptions, run_workflow
    from flowsh.loader import load_workflow

    # A run id of our own: hypothesis seeds `random`, which the engine's ids come from.
    run_id = f"test-{uuid.uuid4().hex[:12]}"
    run = run_workflow(load_workflow(path), RunOptions(params=params or {}, run_id=run_id))
    steps = {n: (s.status, s.exit_code, dict(s.outputs)) for n, s in run.steps.items()}
    return int(run.exit_code or 0), steps


def export_script(path: Path, *, inline: bool = False, out: Path | None = None) -> Path:
    from flowsh.export import render_bash
    from flowsh.loader import load_workflow

    script = out or path.with_suffix(".sh")
    script.write_text(render_bash(load_workflow(path), inline=inline))
    script.chmod(0o700)
    return script


def run_script(
    script: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(script), *args], env={**os.environ, **(env or {})}, text=True,
        capture_output=True, timeout=timeout, check=False,
    )


def checkpoint(name: str, home: Path | None = None) -> dict[str, Any]:
    """The checkpoint of workflow `name`: its directory is the workflow's identity, the
    name itself or, for a file without `name:`, the name and a hash of its path."""
    home = home or Path(os.environ["FLOWSH_HOME"])
    found = sorted((home / "exported").glob(f"{name}/state_*.json")) or sorted(
        (home / "exported").glob(f"{name}-*/state_*.json"))
    assert len(found) == 1, f"checkpoints of {name}: {found}"
    data: dict[str, Any] = json.loads(found[0].read_text())
    return data


def script_steps(name: str, home: Path | None = None) -> Steps:
    data = checkpoint(name, home)
    return {
        n: (s["status"], s["exit_code"], dict(s["outputs"])) for n, s in data["steps"].items()
    }


def written_files(d: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """What the steps left in their directory, but the workflow and script themselves."""
    return {
        p.name: p.read_text()
        for p in sorted(d.iterdir())
        if p.is_file() and p.suffix not in (".yaml", ".sh") and p.name not in skip
    }


def check_order(events: Path, needs: dict[str, list[str]], concurrency: int) -> None:
    """Every step started after all it needs ended, and never more than `concurrency` ran."""
    lines = events.read_text().split()
    pairs = list(zip(lines[::2], lines[1::2], strict=True))
    index = {(kind, step): i for i, (kind, step) in enumerate(pairs)}
    running = peak = 0
    for kind, _ in pairs:
        running += 1 if kind == "start" else -1
        peak = max(peak, running)
    assert peak <= concurrency, f"{peak} steps ran at once, concurrency is {concurrency}"
    for step, deps in needs.items():
        if ("start", step) not in index:
            continue
        for dep in deps:
            assert index[("end", dep)] < index[("start", step)], (
                f"{step} started before {dep} ended"
            )
