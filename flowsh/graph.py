"""The step graph: dependency order, cycles, reachability, and renderings."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from flowsh.errors import WorkflowError

if TYPE_CHECKING:
    from flowsh.model import Workflow
    from flowsh.yamlsrc import Positions


class Graph:
    """Steps by name with their dependencies (`needs`) and dependents, in file order."""

    def __init__(self, names: list[str], needs: dict[str, list[str]]) -> None:
        self.names = names
        self.needs = needs
        self.dependents: dict[str, list[str]] = {n: [] for n in names}
        for name in names:
            for dep in needs[name]:
                self.dependents[dep].append(name)
        self.order = self._toposort()

    @classmethod
    def build(cls, wf: Workflow, pos: Positions | None = None) -> Graph:
        try:
            return cls([s.name for s in wf.steps], {s.name: list(s.needs or ()) for s in wf.steps})
        except _Cycle as cycle:
            index = {s.name: i for i, s in enumerate(wf.steps)}
            first = cycle.path[0]
            text = " -> ".join(cycle.path)
            message = f"dependency cycle: {text}"
            if pos is not None:
                raise pos.error(message, ("steps", index[first], "needs")) from None
            raise WorkflowError(message, path=wf.path) from None

    def _toposort(self) -> list[str]:
        indegree = {n: len(self.needs[n]) for n in self.names}
        queue = deque(n for n in self.names if indegree[n] == 0)
        order: list[str] = []
        while queue:
            n = queue.popleft()
            order.append(n)
            for d in self.dependents[n]:
                indegree[d] -= 1
                if indegree[d] == 0:
                    queue.append(d)
        if len(order) != len(self.names):
            raise _Cycle(self._find_cycle({n for n in self.names if indegree[n] > 0}))
        return order

    def _find_cycle(self, remaining: set[str]) -> list[str]:
        """A concrete cycle among the steps Kahn's algorithm could not order."""
        start = next(n for n in self.names if n in remaining)
        path: list[str] = []
        on_path: dict[str, int] = {}
        node = start
        while node not in on_path:
            on_path[node] = len(path)
            path.append(node)
            node = next(d for d in self.needs[node] if d in remaining)
        # `path` follows needs-edges (a needs b); print in run order (b before a).
        cycle = path[on_path[node]:]
        cycle.reverse()
        return [*cycle, cycle[0]]

    def descendants(self, names: Iterable[str]) -> set[str]:
        return self._reach(names, self.dependents)

    def ancestors(self, names: Iterable[str]) -> set[str]:
        return self._reach(names, self.needs)

    @staticmethod
    def _reach(names: Iterable[str], edges: Mapping[str, Iterable[str]]) -> set[str]:
        seen: set[str] = set()
        stack = list(names)
        while stack:
            for d in edges[stack.pop()]:
                if d not in seen:
                    seen.add(d)
                    stack.append(d)
        return seen

    def levels(self) -> list[list[str]]:
        """Steps grouped by depth (longest path from a root), for plans and drawings."""
        depth: dict[str, int] = {}
        for n in self.order:
            depth[n] = 1 + max((depth[d] for d in self.needs[n]), default=-1)
        out: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
        for n in self.names:
            out[depth[n]].append(n)
        return out

    # Renderings -----------------------------------------------------------------------

    def render(self, fmt: str, status: dict[str, str] | None = None) -> str:
        if fmt == "mermaid":
            return self.mermaid(status)
        if fmt == "dot":
            return self.dot(status)
        return self.ascii(status)

    def ascii(self, status: dict[str, str] | None = None) -> str:
        lines = []
        for i, level in enumerate(self.levels()):
            for n in level:
                deps = self.needs[n]
                mark = f" [{status[n]}]" if status and n in status else ""
                after = f"  <- {', '.join(deps)}" if deps else ""
                lines.append(f"{'  ' * i}{'└─ ' if i else ''}{n}{mark}{after}")
        return "\n".join(lines)

    def mermaid(self, status: dict[str, str] | None = None) -> str:
        ids = {n: f"s{i}" for i, n in enumerate(self.names)}
        lines = ["flowchart TD"]
        for n in self.names:
            label = n.replace('"', "#quot;")
            lines.append(f'    {ids[n]}["{label}"]')
        for n in self.names:
            for d in self.needs[n]:
                lines.append(f"    {ids[d]} --> {ids[n]}")
        if status:
            for n, s in status.items():
                if n in ids:
                    lines.append(f"    class {ids[n]} {s}")
        return "\n".join(lines)

    def dot(self, status: dict[str, str] | None = None) -> str:
        colours = {"succeeded": "palegreen", "failed": "salmon", "skipped": "lightgrey",
                   "running": "lightblue", "interrupted": "orange"}

        def q(s: str) -> str:
            return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'

        lines = ["digraph workflow {", "    rankdir=TB;", "    node [shape=box, style=rounded];"]
        for n in self.names:
            attrs = ""
            if status and n in status and status[n] in colours:
                attrs = f" [style=\"rounded,filled\", fillcolor={colours[status[n]]}]"
            lines.append(f"    {q(n)}{attrs};")
        for n in self.names:
            for d in self.needs[n]:
                lines.append(f"    {q(d)} -> {q(n)};")
        lines.append("}")
        return "\n".join(lines)


class _Cycle(Exception):
    def __init__(self, path: list[str]) -> None:
        super().__init__(" -> ".join(path))
        self.path = path
