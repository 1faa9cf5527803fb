"""Running part of a workflow: `--only`, `--from`, `--until` (docs/semantics.md SELECT).

Which steps a selection names, and the outputs the steps left out would have handed the
selected ones: each from the latest successful run of the workflow in which that step
succeeded. A selected step is never handed a value nobody can vouch for: no such run, or
a secret the store no longer keeps, refuses the run before anything is recorded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from flowsh.errors import UsageError, did_you_mean
from flowsh.graph import Graph
from flowsh.model import Workflow
from flowsh.secrets import MASK
from flowsh.state import SKIPPED, SUCCEEDED, RunRecord, SkipReason, StateBackend, StepRecord

# How far back a missing step's last success is looked for: runs are newest first, and a
# step that has not succeeded in this many successful runs is as good as never.
LOOK_BACK = 200

Unmask = Callable[[Path, str, dict[str, str]], dict[str, str]]


def split_names(values: Iterable[str]) -> list[str]:
    """`--only a,b --only c` -> [a, b, c] (blanks dropped)."""
    return [n.strip() for v in values for n in v.split(",") if n.strip()]


def check_name(wf: Workflow, name: str, option: str) -> None:
    names = [s.name for s in wf.steps]
    if name in names:
        return
    raise UsageError(f"{option} {name}: no step {name!r} in {wf.path}"
                     f"{did_you_mean(name, names)}")


def choose(wf: Workflow, graph: Graph, *, only: Iterable[str] = (), from_: str | None = None,
           until: str | None = None) -> set[str] | None:
    """The steps a selection runs, or None for every step.

    `--only` names steps exactly and stands alone; `--from` and `--until` together
    select what lies between (downstream of one and upstream of the other)."""
    only = list(only)
    listed = split_names(only)
    if only and not listed:
        raise UsageError("--only needs a step name")
    if listed and (from_ is not None or until is not None):
        raise UsageError("--only does not combine with --from or --until "
                         "(--from A --until B selects the steps between A and B)")
    for name in listed:
        check_name(wf, name, "--only")
    if listed:
        return set(listed)
    if from_ is None and until is None:
        return None
    chosen = {s.name for s in wf.steps}
    if from_ is not None:
        check_name(wf, from_, "--from")
        chosen &= {from_} | graph.descendants([from_])
    if until is not None:
        check_name(wf, until, "--until")
        chosen &= {until} | graph.ancestors([until])
    if not chosen:
        raise UsageError(f"--from {from_} --until {until}: no step is both; {until!r} is "
                         f"not downstream of {from_!r}")
    return chosen


def not_selected(run: RunRecord) -> set[str]:
    """Steps a run left out of its selection (a resume keeps them out)."""
    return {n for n, r in run.steps.items()
            if r.status == SKIPPED and r.skip_reason == SkipReason.NOT_SELECTED}


def needed(graph: Graph, left_out: set[str], runs: set[str]) -> dict[str, str]:
    """Steps left out whose outputs reach a step that runs: each -> the first (in run
    order) step that runs and needs it, directly or through others."""
    out: dict[str, str] = {}
    for name in graph.order:
        if name not in runs:
            continue
        for up in sorted(graph.ancestors([name]) & left_out, key=graph.order.index):
            out.setdefault(up, name)
    return out


def handed_on(rec: StepRecord) -> bool:
    """A step's record carries outputs it vouched for: it succeeded, or was skipped up to
    date, handing on its last success's outputs (UPTODATE-2/3) as if it had run again."""
    return rec.status == SUCCEEDED or (
        rec.status == SKIPPED and rec.skip_reason == SkipReason.UP_TO_DATE)


def borrow(backend: StateBackend, wf: Workflow, wants: dict[str, str],
           unmask: Unmask,
           runs_dir: Path) -> dict[str, dict[str, str]]:
    """Outputs of the steps in `wants` (step -> the selected step that needs it), each
    from the latest successful run in which it succeeded or was up to date. `unmask(run_dir,
    step, outputs)` puts back secret values that run still keeps (never, once it
    succeeded: SECRET-2), so a secret one is refused as a resume refuses it; so is a
    value the store keeps masked because it held a secret value (`copy=$password`)."""
    found: dict[str, dict[str, str]] = {}
    source: dict[str, str] = {}
    if wants:
        for run in backend.list_runs(wf.identity, limit=LOOK_BACK,
                                     statuses=frozenset({SUCCEEDED})):
            missing = [n for n in wants if n not in found]
            if not missing:
                break
            if not run.steps:
                run = backend.load_run(run.run_id)
            for name in missing:
                rec = run.steps.get(name)
                if rec is not None and handed_on(rec):
                    found[name] = unmask(runs_dir / run.run_id, name, rec.outputs)
                    source[name] = run.run_id
    for name, user in wants.items():
        if name not in found:
            raise UsageError(
                f"step {user!r} needs the outputs of {name!r}, which is not selected and "
                f"has not succeeded in any successful run of {wf.name}: select it too "
                f"(--from {name}), or run the whole workflow once")
        lost = sorted(k for k, v in found[name].items() if MASK in v)
        if lost:
            raise UsageError(
                f"step {user!r} needs output {', '.join(lost)} of {name!r}, which is not "
                f"selected; it held a secret, which is no longer kept for run "
                f"{source[name]} (gone once a run succeeds): select {name!r} too "
                f"(--from {name})")
    return found


def selection(backend: StateBackend, wf: Workflow, graph: Graph, select: set[str] | None,
              prior: RunRecord | None, only: set[str] | None, unmask: Unmask,
              runs_dir: Path) -> tuple[set[str], dict[str, dict[str, str]]]:
    """The steps a run leaves out (a new run's `select`; a resumed run keeps its own) and
    the outputs they pass on, borrowed from the latest successful runs (or refused)."""
    names = set(graph.names)
    steps = {s.name: s for s in wf.steps}
    if prior is None:
        left = names - select if select is not None else set()
        runs = names - left
    else:
        left = not_selected(prior) - (only or set())
        runs = only if only is not None else {
            n for n in names - left if prior.steps.get(n) is None
            or prior.steps[n].status != SUCCEEDED or steps[n].always}
    if not left:
        return left, {}
    return left, borrow(backend, wf, needed(graph, left, runs), unmask, runs_dir)
