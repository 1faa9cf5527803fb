"""Where a workflow's steps run and where their files are: relative to the workflow file.

A cron job's cwd is $HOME; resolving against the file's directory means `scripts/load.sh`
is found however flowsh is started.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from flowsh.model import Step, Workflow


def workflow_dir(wf: Workflow) -> Path:
    return _parent(wf.path) if wf.path else Path.cwd()


@functools.lru_cache(maxsize=64)
def _parent(path: str) -> Path:
    # Asked at every step (its workdir); a Path is immutable, so one serves them all.
    return Path(path).parent


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
