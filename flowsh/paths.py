"""Where a workflow's steps run and where their files are: relative to the workflow file.

A cron job's cwd is $HOME; resolving against the file's directory means `scripts/load.sh`
is found however flowsh is started.
"""

from __future__ import annotations

import os
from pathlib import Path

from flowsh.model import Step, Workflow


def workflow_dir(wf: Workflow) -> Path:
    return Path(wf.path).parent if wf.path else Path.cwd()


def resolve_path(wf: Workflow, p: str, base: Path | None = None) -> Path:
    path = Path(os.path.expandvars(os.path.expanduser(p)))
    return path if path.is_absolute() else (base or workflow_dir(wf)) / path


def step_cwd(wf: Workflow, step: Step) -> Path:
    base = workflow_dir(wf)
    if wf.workdir:
        base = resolve_path(wf, wf.workdir)
    if step.workdir:
        base = resolve_path(wf, step.workdir, base)
    return base
