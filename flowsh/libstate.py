"""A run's library state (shared rule 1): the top-level assignments of the bash files steps
source, evaluated once per run and recorded with it.

Steps read their libraries for definitions only; the variables a library sets
(``STAMP=$(date +%s)``, ``DEST=/default``) are computed here, once, before the first step,
in one bash with the run's base environment, and recorded as ``declare -p`` text in
``$FLOWSH_HOME/runs/<id>/library-state.json`` (0600). A resumed run reads that file back
and never evaluates again, so every step of a run, resumed or not, sees the same values.
Each step gets its text as ``FLOWSH_LIBRARY_STATE`` (an environment variable, so a remote
executor's worker gets it too). See `flowsh.bashlib` for the bash side.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from flowsh.bashlib import library_state_script
from flowsh.errors import StateError, UsageError
from flowsh.fileio import atomic_write
from flowsh.model import Workflow
from flowsh.paths import step_cwd
from flowsh.signals import interruptible
from flowsh.steps import base_environment, env_file_values, library_files

STATE_FILE = "library-state.json"
EVAL_TIMEOUT = 300.0
# Linux limits one environment string to 128 KiB (MAX_ARG_STRLEN): a larger state would make
# every step fail to start with "Argument list too long". Refused up front instead.
MAX_STATE_BYTES = 120_000


@dataclass
class LibraryState:
    text: str  # `declare -p` lines: FLOWSH_LIBRARY_STATE
    values: dict[str, str] = field(default_factory=dict)  # name -> value, for masking


def key(files: list[str]) -> str:
    return "\n".join(files)


def evaluate(files: list[str], env: Mapping[str, str], cwd: Path, *,
             probe: bool = False) -> LibraryState:
    """Source `files` once (guarded, assignments included) and capture what they set;
    `probe` (validate): no command substitution runs but the guard's harmless ones."""
    shown = ", ".join(files)
    try:
        # Its own process group: on SIGINT/SIGTERM (TIME-2: exit 130) or a timeout what
        # the evaluation started (`X=$(slow command)`) is stopped with it.
        proc = subprocess.Popen(
            ["bash", "--noprofile", "--norc", "-c", library_state_script(files, probe=probe)],
            env=dict(env), cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, start_new_session=True,
        )
    except OSError as exc:
        raise UsageError(f"cannot start bash to read {shown}: {exc.strerror}") from None
    try:
        with interruptible():
            stdout, stderr = proc.communicate(timeout=EVAL_TIMEOUT)
    except subprocess.TimeoutExpired:
        _stop(proc)
        raise UsageError(f"evaluating the top-level assignments of {shown} took over "
                         f"{EVAL_TIMEOUT:g}s (a top-level command waiting?)") from None
    except BaseException:
        _stop(proc)
        raise
    res = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    text, sep, pairs = res.stdout.partition(b"\0")
    if res.returncode != 0 or not sep:
        err = res.stderr.decode(errors="replace").strip().splitlines()
        detail = err[-1] if err else f"bash exited with {res.returncode}"
        raise UsageError(f"evaluating the top-level assignments of {shown} failed: {detail}")
    parts = pairs.split(b"\0")
    values = {
        parts[i].decode(errors="surrogateescape"): parts[i + 1].decode(errors="surrogateescape")
        for i in range(0, len(parts) - 1, 2)
    }
    if len(text) > MAX_STATE_BYTES:
        raise UsageError(f"the top-level variables of {shown} take {len(text)} bytes; steps "
                         f"get them in their environment, which holds at most "
                         f"{MAX_STATE_BYTES} (keep large data in files)")
    return LibraryState(text.decode(errors="surrogateescape"), values)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()


def _groups(wf: Workflow) -> dict[str, tuple[list[str], Path]]:
    """Each distinct list of libraries the steps source, with where it is evaluated."""
    groups: dict[str, tuple[list[str], Path]] = {}
    for step in wf.steps:
        files = library_files(wf, step)
        if files and key(files) not in groups:
            groups[key(files)] = (files, step_cwd(wf, step))
    return groups


def check_states(wf: Workflow) -> None:
    """FILE-2: `flowsh validate` refuses what `flowsh run` would before any step (SOURCE-5):
    a library whose top-level evaluation fails, or whose variables exceed the limit. It
    evaluates them as a run does, with the file's params and environment."""
    groups = _groups(wf)
    if not groups:
        return
    params = {k: v for k, v in wf.params.items() if v is not None}
    env = base_environment(wf, params, env_file_values(wf))
    for files, cwd in groups.values():
        # A checker has no side effects: `X=$(cmd)` waits for the run (SOURCE-5).
        evaluate(files, env, cwd, probe=True)


def run_states(wf: Workflow, run_dir: Path, env: Mapping[str, str], *,
               reuse: bool) -> dict[str, LibraryState]:
    """The state of every distinct list of libraries the workflow's steps source.

    `reuse` (a resume): the recorded states are read back; only a list no step sourced
    when the run began (the file gained a step) is evaluated now, and recorded.
    """
    groups = _groups(wf)
    if not groups:
        return {}
    path = run_dir / STATE_FILE
    states: dict[str, LibraryState] = {}
    if reuse and path.exists():
        try:
            data = json.loads(path.read_text(encoding="utf-8", errors="surrogateescape"))
            states = {k: LibraryState(v["text"], dict(v["values"])) for k, v in data.items()}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StateError(f"{path}: cannot read the run's library state: {exc}") from None
    missing = [k for k in groups if k not in states]
    for k in missing:
        files, cwd = groups[k]
        states[k] = evaluate(files, env, cwd)
    if missing:
        data = {k: {"text": v.text, "values": v.values} for k, v in states.items()}
        atomic_write(path, json.dumps(data, ensure_ascii=True), mode=0o600)
    return states
