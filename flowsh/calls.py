"""Sub-workflows: a step with `call: other.yaml` (docs/semantics.md CALL).

A call step is a process like any other step: `python -m flowsh call-child`, started by the
executor with the step's environment, so the step's timeout, retries and interrupt apply
to it and its process group is stopped with the step. That process runs the child
workflow as a run of its own (its own lock, logs, history), linked both ways: the child's
record names the parent run and step, the parent's step record names the child run. What
it needs travels in the environment (the `FLOWSH_CALL_*` names below and the child's
params in FLOWSH_PARAMS_JSON), never on a command line.

This module is what the parent side needs: the child's path, the checks run at validate
and run time (a child that does not load, unknown params, cycles), the child's secret
names, and the step's environment and argv.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from flowsh.errors import FlowshError, UsageError
from flowsh.loader import load_workflow, positions_of
from flowsh.model import Step, Workflow
from flowsh.runopts import PARAMS_VAR
from flowsh.yamlsrc import Positions

FILE_VAR = "FLOWSH_CALL_FILE"  # the child's file (absolute)
RUN_VAR = "FLOWSH_CALL_RUN"  # the child's run id, chosen (and recorded) by the parent
PARENT_VAR = "FLOWSH_CALL_PARENT"  # the parent's run id
STEP_VAR = "FLOWSH_CALL_STEP"  # the calling step's name
STATE_VAR = "FLOWSH_CALL_STATE"  # the parent's state URL: the child is recorded there too
CHAIN_VAR = "FLOWSH_CALL_CHAIN"  # JSON list of the files calling this one, outermost first
SECRETS_VAR = "FLOWSH_CALL_SECRETS"  # JSON list of the parent's secret names
CALL_VARS = (FILE_VAR, RUN_VAR, PARENT_VAR, STEP_VAR, STATE_VAR, CHAIN_VAR, SECRETS_VAR)


def child_path(wf: Workflow, step: Step) -> Path:
    """The file a call step runs: relative to the calling file's directory."""
    assert step.call is not None
    base = Path(wf.path).parent if wf.path else Path.cwd()
    return Path(os.path.abspath(base / os.path.expanduser(step.call)))


def _short(path: str | Path) -> str:
    return os.path.basename(str(path))


def cycle_message(chain: Sequence[str], path: str) -> str | None:
    """`call cycle: a.yaml -> b.yaml -> a.yaml` when `path` is already in `chain`.
    Compared by real path: through a symlinked directory (`loop -> .`, `call:
    loop/a.yaml`) every level is a new spelling of the same file."""
    real = [os.path.realpath(p) if p else p for p in chain]
    target = os.path.realpath(path)
    if target not in real:
        return None
    loop = [*chain[real.index(target):], path]
    return "call cycle: " + " -> ".join(_short(p) for p in loop)


def check_calls(wf: Workflow, chain: Sequence[str] = ()) -> None:
    """Load every workflow `wf` calls, and those they call: a child that does not load,
    a `params` name it does not declare, or a cycle is refused (WorkflowError, exit 2)
    at FILE:LINE:COL of the calling step's `call`, with the child's own error."""
    chain = [*chain, wf.path or ""]
    pos: Positions | None = None
    for i, step in enumerate(wf.steps):
        if step.call is None:
            continue
        path = child_path(wf, step)
        problem = cycle_message(chain, str(path))
        child: Workflow | None = None
        if problem is None:
            try:
                child = load_workflow(path)
                _check_params(child, step.params)
                check_calls(child, chain)
            except FlowshError as exc:
                problem = str(exc)
        if problem is not None:
            if pos is None:
                pos = positions_of(wf) or Positions(Path(wf.path) if wf.path else None)
            raise pos.error(f"step {step.name!r}: call {step.call!r}: {problem}",
                            ("steps", i, "call"))
        user = _pool_user(child, step.pool) if child is not None and step.pool else None
        if user is not None:
            if pos is None:
                pos = positions_of(wf) or Positions(Path(wf.path) if wf.path else None)
            raise pos.error(
                f"step {step.name!r}: pool {step.pool!r} is also used by {user}, which would "
                f"wait for ever for the slot its call step holds (POOL-9): drop `pool` from "
                f"the call step or from the child's steps", ("steps", i, "pool"))


def _pool_user(child: Workflow, pool: str) -> str | None:
    """`step 'x' of child.yaml` when a step of `child`, or of a workflow it calls, uses
    `pool`: its call step holds a slot of it for the whole child run (POOL-1), so in a
    pool of one the child's step never gets one. check_calls has refused cycles already."""
    for step in child.steps:
        if step.pool == pool:
            return f"step {step.name!r} of {_short(child.path or '')}"
        if step.call is not None:
            try:
                grandchild = load_workflow(child_path(child, step))
            except FlowshError:
                continue  # refused by check_calls
            user = _pool_user(grandchild, pool)
            if user is not None:
                return user
    return None


def _check_params(child: Workflow, params: Mapping[str, str]) -> None:
    declared = [*child.params, *child.required_params]
    for key in params:
        if key not in declared:
            shown = ", ".join(declared) or "none"
            raise UsageError(f"param {key!r} is not declared by {_short(child.path or '')} "
                                f"(declared: {shown})")


def fill_params(child: Workflow, given: Mapping[str, str],
                environ: Mapping[str, str]) -> dict[str, str]:
    """The child's params: the step's `params:` first; a declared param it does not give
    takes the environment's variable of the same name when there is one (the parent's
    params, env and upstream outputs reach the call step as environment); else the
    child's own default applies (or, for a required one, the child refuses to start)."""
    params = dict(given)
    for name in (*child.params, *child.required_params):
        if name not in params and name in environ:
            params[name] = environ[name]
    return params


def called_secrets(wf: Workflow, seen: set[str] | None = None) -> set[str]:
    """Secret names of every workflow `wf` calls (recursively): the child's outputs under
    those names stay secret in the parent (masked, kept out of the store)."""
    seen = set() if seen is None else seen
    names: set[str] = set()
    for step in wf.steps:
        if step.call is None:
            continue
        path = str(child_path(wf, step))
        if os.path.realpath(path) in seen:
            continue
        seen.add(os.path.realpath(path))
        try:
            child = load_workflow(path)
        except FlowshError:
            continue  # refused by check_calls before anything runs
        names |= child.secret_names() | called_secrets(child, seen)
    return names


def step_environment(env: Mapping[str, str], wf: Workflow, step: Step, *, child_run: str,
                     parent_run: str, state_url: str,
                     secrets: Iterable[str] = ()) -> dict[str, str]:
    """The call step's environment: the step's own, and what the child process needs.
    `secrets`: the parent's secret names, secret in the child too (a parent param in
    `secrets:` that fills a child param must not reach the child's record in clear)."""
    chain = json.loads(os.environ.get(CHAIN_VAR) or "[]")
    out = dict(env)
    out.update({
        FILE_VAR: str(child_path(wf, step)),
        RUN_VAR: child_run,
        PARENT_VAR: parent_run,
        STEP_VAR: step.name,
        STATE_VAR: state_url,
        CHAIN_VAR: json.dumps([*chain, wf.path or ""]),
        PARAMS_VAR: json.dumps(dict(step.params)),
        SECRETS_VAR: json.dumps(sorted(secrets)),
    })
    return out


def argv() -> list[str]:
    """The call step's process: this Python running the child (flowsh/callrun.py) through
    the CLI, which turns its errors into a line and an exit code."""
    return [sys.executable, "-m", "flowsh", "call-child"]
