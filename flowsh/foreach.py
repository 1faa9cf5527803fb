"""`foreach:` fan-out: a step's items, its instances' names, what it hands downstream
(docs/semantics.md FOREACH).

Items are expanded once, when the step becomes ready, and recorded with the step: a resume
runs the recorded items, never a fresh expansion (FOREACH-3).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import time
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


def expand(step: Step, env: Mapping[str, str], cwd: Path) -> list[str]:
    """The items of a list, file or output form (raises ExpandError with the step's
    failure message). The command form runs beside the run loop: `Expansion`."""
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
    assert isinstance(source, ForeachOutput)
    if source.output not in env:
        raise ExpandError(f"foreach: no output or variable {source.output} reaches "
                          "this step")
    return _lines(env[source.output], source.output)


# Linux's MAX_ARG_STRLEN: one environment string ("ITEM=" + the item + NUL) holds at most
# 32 pages; a longer item would fail its instance at exec ("Argument list too long").
MAX_ITEM_BYTES = 32 * 4096 - len("ITEM=") - 1


def check_items(items: Sequence[str]) -> None:
    """Raise ExpandError for an item no instance could be handed (FOREACH-2)."""
    for index, item in enumerate(items):
        size = len(item.encode("utf-8", "surrogateescape"))
        if size > MAX_ITEM_BYTES:
            raise ExpandError(f"foreach: item {index} is {size} bytes long; an environment "
                              f"variable holds at most {MAX_ITEM_BYTES}")


class Expansion:
    """A `foreach: {command:}` running: started in a session of its own with its stdout
    and stderr in files of the run directory, and polled by the run loop, which goes on
    meanwhile (signals, heartbeats, other steps' ends and timeouts never wait for it).
    Whatever it leaves in its process group goes with it, as a step's leftovers do."""

    def __init__(self, step: Step, env: Mapping[str, str], cwd: Path, spool: Path,
                 timeout: float | None) -> None:
        self.out, self.err = spool.with_suffix(".items"), spool.with_suffix(".items-err")
        self.deadline = None if timeout is None else time.monotonic() + timeout
        assert isinstance(step.foreach, ForeachCommand)
        # The workflow's own text under the step's shell, as a `run:` is; whatever the env
        # holds stays in the env.
        argv = [*shlex.split(step.shell or "bash"), "-c", step.foreach.command]
        try:
            with open(self.out, "wb") as out, open(self.err, "wb") as err:
                self.proc = subprocess.Popen(argv, cwd=cwd, env=dict(env),
                                             stdin=subprocess.DEVNULL, stdout=out,
                                             stderr=err, start_new_session=True)
        except OSError as exc:
            self._remove()
            raise ExpandError("foreach: its command could not start: "
                              f"{exc.strerror or exc}") from None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def poll(self) -> list[str] | None:
        """The items once the command has ended (None while it runs); raises ExpandError
        when it failed or outlived the step's timeout."""
        try:
            ended = os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            ended = None  # reaped already (poll() below has the status)
        if ended is None and self.proc.returncode is None:
            if self.deadline is not None and time.monotonic() >= self.deadline:
                self.stop()
                raise ExpandError("foreach: its command timed out")
            return None
        self._kill_group()  # before the reap, while its pid still names the group
        code = self.proc.wait()
        try:
            if code != 0:
                last = (self.err.read_bytes().decode("utf-8", "replace").strip()
                        .splitlines()[-1:] or [""])
                raise ExpandError(f"foreach: its command exited {code}"
                                  + (f": {last[0][:200]}" if last[0] else ""))
            return _lines(self.out.read_bytes().decode("utf-8", "surrogateescape"),
                          "its command's output")
        finally:
            self._remove()

    def stop(self) -> None:
        """Kill the command and everything in its group (an interrupt, a timeout)."""
        if self.proc.returncode is None:
            self._kill_group()
            self.proc.wait()
        self._remove()

    def _kill_group(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def _remove(self) -> None:
        for path in (self.out, self.err):
            path.unlink(missing_ok=True)


__all__ = ["ExpandError", "Expansion", "check_items", "expand", "instance_names", "item_env",
           "joined_outputs", "parent_of"]

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
