"""The exported bash script and `flowsh run` agree: same step statuses, outputs, exit code,
same files written, same order constraints, on every workflow of tests/corpus."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from exportkit import (
    CORPUS,
    check_order,
    export_script,
    prepare,
    run_engine,
    run_script,
    script_steps,
    written_files,
)

from flowsh.loader import load_workflow

NAMES = sorted(p.stem for p in CORPUS.glob("*.yaml"))
EXPECTED_EXIT = {"failure": 1}
# Files whose content depends on timing or pids, compared by other means.
VOLATILE = ("events.log", "grandchild.pid")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purpose.
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.split(")")[-1].split()[0] != "Z"


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("inline", [False, True], ids=["by-path", "inline"])
def test_script_matches_engine(name: str, inline: bool, tmp_path: Path) -> None:
    engine_wf = prepare(name, tmp_path / "engine")
    script_wf = prepare(name, tmp_path / "script")

    engine_code, engine_steps = run_engine(engine_wf)
    script = export_script(script_wf, inline=inline)
    proc = run_script(script)

    assert proc.returncode == EXPECTED_EXIT.get(name, 0), proc.stderr
    assert engine_code == proc.returncode
    assert script_steps(name) == engine_steps
    assert written_files(script_wf.parent, VOLATILE) == written_files(engine_wf.parent, VOLATILE)

    wf = load_workflow(engine_wf)
    needs = {s.name: list(s.needs or ()) for s in wf.steps}
    for d in (engine_wf.parent, script_wf.parent):
        if (d / "events.log").exists():
            check_order(d / "events.log", needs, wf.concurrency)
        if (d / "grandchild.pid").exists():
            assert not _alive(int((d / "grandchild.pid").read_text())), f"grandchild alive ({d})"


def test_corpus_covers_the_issue() -> None:
    """chains, diamonds, fan-out, failures, retries, timeouts, always, outputs, params."""
    assert {"chain", "diamond", "fanout", "failure", "retries", "timeout", "outputs",
            "params", "conditions"} <= set(NAMES)
