"""`foreach:` fan-out: a step's items, its instances' names, what it hands downstream
(docs/semantics.md FOREACH).

Items are expanded once, when the step becomes ready, and recorded with the step: a resume
runs the recorded items, never a fresh expansion (FOREACH-3).
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from flowsh.model import MAX_ITEMS, ForeachCommand, ForeachFile, ForeachOutput, Step
from flowsh.state import instance_names, instance_parent


class ExpandError(Exception):
    """The items could not be had: the step fails with this message."""


def _lines(text: str, where: str) -> list[str]:
    if "\0" in text:
        raise ExpandError(f"foreach: {where} holds a NUL byte")
    items = [line for line in text.split("\n") if line.strip()]
    if len(items) > MAX_ITEMS:
        raise ExpandError(f"foreach: {where} gives {len(items)} items; at most {MAX_ITEMS}")
    return items


def expand(step: Step, env: Mapping[str, str], cwd: Path,
           timeout: float | None = None) -> list[str]:
    """The step's items (raises ExpandError with the step's failure message)."""
    source = step.foreach
    if isinstance(source, list):
        return list(source)
    if isinstance(source, ForeachFile):
        path = cwd / source.file
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ExpandError(f"foreach: cannot read {source.file}: "
                              f"{exc.strerror or exc}") from None
        return _lines(data.decode("utf-8", "surrogateescape"), source.file)
    if isinstance(source, ForeachOutput):
        if source.output not in env:
            raise ExpandError(f"foreach: no output or variable {source.output} reaches "
                              "this step")
        return _lines(env[source.output], source.output)
    assert isinstance(source, ForeachCommand)
    try:
        # The workflow's own text, as a `run:` is; whatever the env holds stays in the env.
        done = subprocess.run(
            [step.shell or "bash", "-c", source.command], cwd=cwd, env=dict(env),
            stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise ExpandError("foreach: its command timed out") from None
    except OSError as exc:
        raise ExpandError(f"foreach: its command could not start: {exc.strerror}") from None
    if done.returncode != 0:
        last = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
        raise ExpandError(f"foreach: its command exited {done.returncode}"
                          + (f": {last[0][:200]}" if last[0] else ""))
    return _lines(done.stdout.decode("utf-8", "surrogateescape"), "its command's output")


__all__ = ["ExpandError", "expand", "instance_names", "item_env", "joined_outputs",
           "parent_of"]

parent_of = instance_parent


def item_env(item: str, index: int) -> dict[str, str]:
    return {"ITEM": item, "ITEM_INDEX": str(index)}


def joined_outputs(per_item: Sequence[Mapping[str, str]]) -> dict[str, str]:
    """What the step hands downstream: each name's values, one a line in item order, from
    the items that set it (FOREACH-7)."""
    values: dict[str, list[str]] = {}
    for outputs in per_item:
        for key, value in outputs.items():
            values.setdefault(key, []).append(value)
    return {key: "\n".join(vals) for key, vals in values.items()}
