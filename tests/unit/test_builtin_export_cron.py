"""flowsh.builtin.export_cron: the `crontab` exporter, through the registry."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from flowsh import plugins
from flowsh.builtin.export_cron import export_crontab
from flowsh.errors import UsageError
from flowsh.loader import load_workflow
from flowsh.schedjob import render_crontab


def test_registered_as_crontab() -> None:
    assert plugins.registry("exporters")["crontab"] is export_crontab


def test_exports_the_workflows_schedule_or_given_exprs(write_flow: Callable[..., Path]) -> None:
    wf = load_workflow(write_flow("name: w\nschedule: '0 2 * * *'\nsteps:\n  - {name: a, run: x}\n"))
    text = export_crontab(wf)
    assert text == render_crontab(wf)
    assert "\n0 2 * * * cd " in text and text.rstrip().endswith("# END flowsh:w")
    other = export_crontab(wf, exprs=["15 3 * * 1"], path="/opt/bin:/usr/bin")
    assert "\n15 3 * * 1 cd " in other and "PATH=/opt/bin:/usr/bin" in other and "0 2 * * *" not in other


def test_refuses_what_cron_cannot_do(write_flow: Callable[..., Path]) -> None:
    wf = load_workflow(write_flow("name: w\nsteps:\n  - {name: a, run: x}\n"))
    with pytest.raises(UsageError, match="no `schedule`"):
        export_crontab(wf)


def test_script_option_schedules_an_exported_script(write_flow: Callable[..., Path],
                                                    tmp_path: Path) -> None:
    wf = load_workflow(write_flow("name: w\nschedule: '0 2 * * *'\nsteps:\n  - {name: a, run: x}\n"))
    script = tmp_path / "w.sh"
    script.write_text("#!/bin/bash\n")
    text = export_crontab(wf, script=str(script))
    assert "flock -n -E 75 " in text and str(script) in text and "--resume" not in text
