"""The child side of a `call:` step (docs/semantics.md CALL): the process the step runs,
`flowsh call-child` (a hidden command), which runs the child workflow to its end.

Everything arrives in the environment (flowsh/calls.py): the child's file, the run id the
parent chose and recorded, the parent's run and step, its state URL, the chain of calling
files, the `params:` in FLOWSH_PARAMS_JSON. They are taken out of the environment before
the child's steps start, as FLOWSH_OUTPUT (the parent step's outputs file) is.

- No record of that run id: a new run under it. A record that did not succeed: a resume
  of it (succeeded steps are not run again). A record that succeeded: its outputs are
  handed on again, without running anything; if one of them is a secret the store kept
  only as `***`, every step runs again under the same id (the value exists nowhere else).
- The child's outputs, when it succeeds, are the outputs of its succeeded steps merged in
  file order (a later step wins a name), written to the parent step's FLOWSH_OUTPUT.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Mapping, MutableMapping
from pathlib import Path

from flowsh import calls
from flowsh.checks import check_workflow
from flowsh.engine import run_workflow
from flowsh.errors import EXIT_FAILED, NotFoundError, WorkflowError
from flowsh.loader import load_workflow
from flowsh.model import Workflow
from flowsh.plugins import make_reporter
from flowsh.runopts import PARAMS_VAR, GuardedReporter, Reporter, RunOptions
from flowsh.secrets import MASK, load_secret_outputs
from flowsh.state import SUCCEEDED, RunRecord, StateBackend, StepRecord, flowsh_home
from flowsh.store import check_liveness, open_backend
from flowsh.survivors import OUTER_TOKENS_VAR, TOKEN_VAR


class _Linking(GuardedReporter):
    """The child's reporter (plain lines, into the parent step's log), which also links
    the child's record to its parent once it exists and keeps each succeeded step's
    outputs, secret ones included, before the run's end drops them."""

    def __init__(self, inner: Reporter, backend: StateBackend, parent: tuple[str, str]) -> None:
        super().__init__(inner)
        self.backend, self.parent = backend, parent
        self.outputs: dict[str, dict[str, str]] = {}

    def run_started(self, run: RunRecord, wf: Workflow) -> None:
        if (run.parent_run, run.parent_step) != self.parent:
            run.parent_run, run.parent_step = self.parent
            self.backend.update_run(run)
        super().run_started(run, wf)

    def step_finished(self, run: RunRecord, step: StepRecord) -> None:
        if step.status == SUCCEEDED:
            self.outputs[step.name] = _unmasked(run.run_id, step)
        super().step_finished(run, step)


def _unmasked(run_id: str, step: StepRecord) -> dict[str, str]:
    return {**step.outputs, **load_secret_outputs(flowsh_home() / "runs" / run_id, step.name)}


def _take(environ: MutableMapping[str, str], name: str) -> str:
    value = environ.pop(name, None)
    if value is None:
        raise WorkflowError(f"{name} is not set: `flowsh call-child` is what a `call:` step "
                            "runs, not a command to run by hand")
    return value


def run_child(environ: MutableMapping[str, str] | None = None) -> int:
    """Run (or resume) the child; return its exit code. Raises FlowshError (exit 2 for a
    bad child file or a call cycle)."""
    env: MutableMapping[str, str] = os.environ if environ is None else environ
    file, child_id = _take(env, calls.FILE_VAR), _take(env, calls.RUN_VAR)
    parent = (_take(env, calls.PARENT_VAR), _take(env, calls.STEP_VAR))
    state_url = _take(env, calls.STATE_VAR)
    chain = json.loads(_take(env, calls.CHAIN_VAR))
    parent_secrets = json.loads(env.pop(calls.SECRETS_VAR, "") or "[]")
    given = json.loads(env.pop(PARAMS_VAR, "") or "{}")
    out_path = env.pop("FLOWSH_OUTPUT", "") or None
    token = env.get(TOKEN_VAR)
    if token:  # the call step's token reaches every process of the child (survivors.py)
        env[OUTER_TOKENS_VAR] = f"{env.get(OUTER_TOKENS_VAR, '')} {token}".strip()
    cycle = calls.cycle_message(chain, file)
    if cycle is not None:
        raise WorkflowError(cycle, path=chain[-1] if chain else None)
    wf = load_workflow(file)
    extra = sorted(set(parent_secrets) - set(wf.secrets))
    if extra:  # the parent's secrets stay secret here (CALL-4)
        wf = wf.model_copy(update={"secrets": [*wf.secrets, *extra]})
    calls.check_calls(wf, chain)
    params = calls.fill_params(wf, given, env)
    backend = open_backend(state_url)
    try:
        prior = _prior(backend, child_id)
        check_workflow(wf, params, given=prior.params if prior else ())
        opts = RunOptions(params=params, backend=backend, run_id=child_id)
        if prior is not None and prior.status == SUCCEEDED:
            kept = {n: _unmasked(child_id, r) for n, r in prior.steps.items()
                    if r.status == SUCCEEDED}
            if not any(MASK in v for out in kept.values() for v in out.values()):
                _write_outputs(out_path, wf, kept)
                print(f"flowsh: child run {child_id} succeeded before; its outputs are used")
                return 0
            opts.only = {s.name for s in wf.steps}  # a secret is lost: all again
        opts.resume = prior
        # Read now: the run's end drops the secret-outputs files of its succeeded steps.
        kept = {n: _unmasked(child_id, r) for n, r in (prior.steps.items() if prior else ())
                if r.status == SUCCEEDED}
        reporter = _Linking(make_reporter("plain", state_url) or Reporter(), backend, parent)
        opts.reporter = reporter
        print(f"flowsh: child run {child_id} of {wf.name} "
              f"({'resumed' if prior is not None else 'new'})", flush=True)
        run = run_workflow(wf, opts)
        if run.status != SUCCEEDED:
            return run.exit_code or EXIT_FAILED
        kept.update(reporter.outputs)
        _write_outputs(out_path, wf, kept)
        return 0
    finally:
        backend.close()


def _prior(backend: StateBackend, run_id: str) -> RunRecord | None:
    try:
        run = backend.load_run(run_id)
    except NotFoundError:
        return None
    if run.run_id != run_id:  # load_run takes a prefix: only this exact id is ours
        return None
    return check_liveness(backend, run)


def _write_outputs(path: str | None, wf: Workflow,
                   by_step: Mapping[str, Mapping[str, str]]) -> None:
    """The child's outputs as the parent step's: succeeded steps' in file order, a later
    step winning a name (CALL-4). A value with a line break goes in a `<<` block."""
    merged: dict[str, str] = {}
    for step in wf.steps:
        merged.update(by_step.get(step.name, {}))
    if path is None or not merged:
        return
    lines: list[str] = []
    for name, value in merged.items():
        if "\n" in value:
            delim = f"FLOWSH_CALL_{uuid.uuid4().hex}"
            lines.append(f"{name}<<{delim}\n{value}\n{delim}\n")
        else:
            lines.append(f"{name}={value}\n")
    with Path(path).open("a", encoding="utf-8", errors="surrogateescape") as fh:
        fh.write("".join(lines))
