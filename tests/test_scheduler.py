"""The ready-set scheduler against a reference model, on random DAGs with real processes.

The engine only re-examines steps whose dependencies changed (a heap of candidates) instead
of scanning every step at every event. These tests hold it to the decisions of the plain
full-scan algorithm (`reference` below, the scheduler as first written): with -j 1 the run
is deterministic, so which steps run, in which order, and every final status must match
exactly, for random graphs mixing failures, `always`, `continue_on_failure` and false `if:`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import pytest

from flowsh.engine import RunOptions, run_workflow
from flowsh.graph import Graph
from flowsh.loader import load_workflow

PENDING, SUCCEEDED, FAILED, SKIPPED = "pending", "succeeded", "failed", "skipped"


@dataclass
class Spec:
    name: str
    needs: list[str]
    fails: bool = False
    always: bool = False
    cof: bool = False  # continue_on_failure
    cond_false: bool = False


def random_specs(rnd: random.Random, n: int) -> list[Spec]:
    specs = []
    for i in range(n):
        k = min(i, rnd.randint(0, 3))
        needs = [f"s{d}" for d in sorted(rnd.sample(range(i), k))] if k else []
        specs.append(Spec(
            name=f"s{i}", needs=needs,
            fails=rnd.random() < 0.12, always=rnd.random() < 0.12,
            cof=rnd.random() < 0.15, cond_false=rnd.random() < 0.1,
        ))
    return specs


def reference(specs: list[Spec]) -> tuple[list[str], dict[str, str]]:
    """The full-scan scheduler at concurrency 1, steps finishing one at a time."""
    by = {s.name: s for s in specs}
    order = Graph([s.name for s in specs], {s.name: s.needs for s in specs}).order
    status = dict.fromkeys(by, PENDING)
    message: dict[str, str] = {}
    failed = False
    ran: list[str] = []

    def deps_state(name: str) -> str:
        state = "ready"
        for dep in by[name].needs:
            st = status[dep]
            if st == SUCCEEDED or (st == FAILED and by[dep].cof):
                continue
            if st == SKIPPED and message.get(dep) == "condition false":
                continue
            if st in (FAILED, SKIPPED):
                state = "blocked"
                continue
            return "wait"
        return state

    def all_final(name: str) -> bool:
        return all(status[d] in (SUCCEEDED, FAILED, SKIPPED) for d in by[name].needs)

    def start_ready() -> str | None:
        started = None
        progressed = True
        while progressed:
            progressed = False
            for name in order:
                if status[name] != PENDING:
                    continue
                spec, deps = by[name], deps_state(name)
                if deps == "wait":
                    continue
                if spec.always:
                    if deps == "blocked" and not all_final(name):
                        continue
                elif deps == "blocked" or failed:
                    if failed and deps != "blocked" and not all_final(name):
                        continue
                    status[name] = SKIPPED
                    message[name] = "upstream failed" if deps == "blocked" else "run failed"
                    progressed = True
                    continue
                if started is not None:
                    return started  # concurrency 1: full
                if spec.cond_false:
                    status[name], message[name] = SKIPPED, "condition false"
                else:
                    status[name], started = "running", name
                progressed = True
        return started

    while (name := start_ready()) is not None:
        ran.append(name)
        if by[name].fails:
            status[name] = FAILED
            failed = failed or not by[name].cof
        else:
            status[name] = SUCCEEDED
    return ran, status


def write(specs: list[Spec], path: Path, concurrency: int) -> Path:
    lines = [f"name: {path.stem}", f"concurrency: {concurrency}", "steps:"]
    for s in specs:
        cmd = 'echo "$FLOWSH_STEP" >> ran.txt' + ("; exit 3" if s.fails else "")
        lines += [f"  - name: {s.name}", f"    run: '{cmd}'",
                  "    needs: [" + ", ".join(s.needs) + "]"]
        if s.always:
            lines.append("    always: true")
        if s.cof:
            lines.append("    continue_on_failure: true")
        if s.cond_false:
            lines.append("    if: 'false'")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("seed", range(12))
def test_matches_full_scan_reference_at_j1(seed: int, tmp_path: Path) -> None:
    specs = random_specs(random.Random(seed), 14)
    ran_ref, status_ref = reference(specs)
    rec = run_workflow(load_workflow(write(specs, tmp_path / f"dag{seed}.yaml", 1)),
                       RunOptions())
    ran_file = tmp_path / "ran.txt"
    ran = ran_file.read_text().split() if ran_file.exists() else []
    assert ran == ran_ref
    assert {n: r.status for n, r in rec.steps.items()} == status_ref
    failed = any(s.fails and not s.cof and st == FAILED for s, st in
                 zip(specs, (status_ref[s.name] for s in specs), strict=True))
    assert rec.exit_code == (1 if failed else 0)


@pytest.mark.parametrize("seed", range(4))
def test_parallel_runs_respect_dependencies(seed: int, tmp_path: Path) -> None:
    """At -j 3 timing decides some skips; dependencies and final states must still hold."""
    specs = random_specs(random.Random(100 + seed), 24)
    for s in specs:
        s.fails = s.fails and s.cof  # no run-stopping failure: every decision is by graph
    _, status_ref = reference(specs)
    rec = run_workflow(load_workflow(write(specs, tmp_path / f"par{seed}.yaml", 3)),
                       RunOptions())
    ran = (tmp_path / "ran.txt").read_text().split()
    assert sorted(ran) == sorted(n for n, st in status_ref.items() if st in (SUCCEEDED, FAILED))
    pos = {n: i for i, n in enumerate(ran)}
    for s in specs:
        if s.name in pos:
            assert all(pos[d] < pos[s.name] for d in s.needs if d in pos)
    assert {n: r.status for n, r in rec.steps.items()} == status_ref


def test_long_chain_and_wide_fan_out_run_every_step(tmp_path: Path) -> None:
    chain = [Spec(f"s{i}", [f"s{i - 1}"] if i else []) for i in range(300)]
    rec = run_workflow(load_workflow(write(chain, tmp_path / "chain.yaml", 4)), RunOptions())
    assert rec.exit_code == 0
    assert (tmp_path / "ran.txt").read_text().split() == [s.name for s in chain]
    (tmp_path / "ran.txt").unlink()
    fan = [Spec(f"f{i}", []) for i in range(60)] + [Spec("join", [f"f{i}" for i in range(60)])]
    rec = run_workflow(load_workflow(write(fan, tmp_path / "fan.yaml", 5)), RunOptions())
    ran = (tmp_path / "ran.txt").read_text().split()
    assert rec.exit_code == 0 and sorted(ran[:-1]) == sorted(f"f{i}" for i in range(60))
    assert ran[-1] == "join"


def test_dry_run_plan_lists_steps_by_stage_with_their_settings(tmp_path: Path) -> None:
    from flowsh.steps import describe_plan

    path = tmp_path / "plan.yaml"
    path.write_text(
        "steps:\n"
        "  - {name: a, run: 'echo a'}\n"
        "  - {name: c, run: 'echo c', needs: [a], retries: 2, timeout: 5s}\n"
        "  - {name: b, run: 'echo b', needs: [a], if: 'test -e x'}\n"
        "  - {name: d, run: 'echo d', needs: [b, c], always: true}\n"
    )
    assert list(describe_plan(load_workflow(path))) == [
        "stage 1: a",
        "  a: echo a",
        "stage 2: c, b",
        "  c: echo c  [retries=2, timeout=5s]",
        "  b: echo b  [if='test -e x']",
        "stage 3: d",
        "  d: echo d  [always]",
    ]
