"""Which steps may go now: the run loop's ready set (docs/semantics.md, ORDER and FAIL).

Only candidates are looked at: a step whose dependencies changed since it was last found
waiting. Scanning every step at every event made a chain of N steps cost O(N^2) (5 ms per
step at N=2000). A step found waiting drops out of the queue; the end of one of its
dependencies or a retry wake-up brings it back (`consider`). Whether a step may go
depends only on its dependencies' states, the concurrency limit (a startable step stays
queued) and whether the run has failed, which only ever turns true and matters only once
a step's dependencies are all final.

A step left out of a selection (`pass_through`) never runs: it is skipped as "not
selected" once its dependencies are final, and its dependents see what its dependencies
were ("blocked" or not), so order and failure pass through it (docs/semantics.md SELECT-2).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator, Mapping

from flowsh.graph import Graph
from flowsh.model import Step
from flowsh.state import (
    FAILED,
    INTERRUPTED,
    PENDING,
    SKIPPED,
    SUCCEEDED,
    SkipReason,
    StepRecord,
)

_FINAL = (SUCCEEDED, FAILED, SKIPPED, INTERRUPTED)


class ReadySet:
    def __init__(self, graph: Graph, steps: Mapping[str, Step]) -> None:
        self.graph = graph
        self.steps = steps
        # A heap by position in graph.order, so steps go in the file's order.
        self.rank = {name: i for i, name in enumerate(graph.order)}
        self.candidates: list[tuple[int, str]] = []
        self.queued: set[str] = set()
        self.pass_through: frozenset[str] = frozenset()  # steps not selected for this run
        self.passed: dict[str, str] = {}  # such a step, skipped -> its dependencies' state

    def consider(self, names: Iterable[str]) -> None:
        """Queue steps whose dependencies changed, to be looked at by `take`."""
        for name in names:
            if name not in self.queued:
                self.queued.add(name)
                heapq.heappush(self.candidates, (self.rank[name], name))

    def take(self, records: Mapping[str, StepRecord], full: Callable[[], bool],
             failed: Callable[[], bool]) -> Iterator[tuple[str, SkipReason | None]]:
        """Steps to act on, in graph order: (name, None) to start it, (name, why) to skip
        it. Stops when `full()` says no slot is free; the caller acts on each before the
        next is computed."""
        heap = self.candidates
        while heap:
            name = heap[0][1]
            rec = records[name]
            if rec.status == PENDING:
                deps = self._deps_state(name, records)
                if deps == "wait":
                    pass
                elif name in self.pass_through:  # never runs: needs no slot
                    self._pop()
                    self.passed[name] = deps
                    yield name, SkipReason.NOT_SELECTED
                    continue
                elif self.steps[name].always:
                    if deps != "blocked" or self._all_final(name, records):
                        if full():
                            return
                        self._pop()
                        yield name, None
                        continue
                elif deps == "blocked" or (failed() and rec.attempts == 0):
                    # A step already attempted keeps its retries after another step
                    # failed (a started step finishes, as in the exported script).
                    if not (failed() and deps != "blocked"
                            and not self._all_final(name, records)):
                        self._pop()
                        yield name, (SkipReason.UPSTREAM if deps == "blocked"
                                     else SkipReason.RUN_FAILED)
                        continue
                else:
                    if full():
                        return
                    self._pop()
                    yield name, None
                    continue
            self._pop()

    def _deps_state(self, name: str, records: Mapping[str, StepRecord]) -> str:
        """'ready', 'wait', or 'blocked' (a dependency failed or was skipped by a failure)."""
        state = "ready"
        for dep in self.graph.needs[name]:
            rec = records[dep]
            if dep in self.passed:  # not selected: as its own dependencies were
                if self.passed[dep] == "blocked":
                    state = "blocked"
                continue
            if rec.lets_dependents_run:
                continue
            if rec.status == FAILED and self.steps[dep].continue_on_failure:
                continue
            if rec.status in (FAILED, SKIPPED, INTERRUPTED):
                state = "blocked"
                continue
            return "wait"
        return state

    def _pop(self) -> None:
        _, name = heapq.heappop(self.candidates)
        self.queued.discard(name)

    def _all_final(self, name: str, records: Mapping[str, StepRecord]) -> bool:
        return all(records[d].status in _FINAL for d in self.graph.needs[name])
