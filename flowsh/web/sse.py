"""Server-Sent Events: a run's state as it changes, the dashboard's workflows as runs start
and end, and a step's log as it grows.

One watcher per run (and one for all dashboards) reads the store (every `POLL` seconds,
on a worker thread) and hands each change to every subscriber: fifty browsers on one run
cost one read per tick, not fifty, so watching never slows the run down (scripts/bench.py
measures it). Logs are
followed per client from a byte offset: reading the new end of a file is cheap.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio.to_thread

from flowsh.errors import NotFoundError
from flowsh.state import FAILED, FINISHED_RUN, INTERRUPTED, RUNNING, SKIPPED, SUCCEEDED
from flowsh.store import check_liveness
from flowsh.web import data

POLL = 0.25
LOG_POLL = 0.25
LOG_CHUNK = 64 * 1024
STEP_DONE = frozenset({SUCCEEDED, FAILED, SKIPPED, INTERRUPTED})  # no more output will come


def snapshot(url: str | None, run_id: str) -> dict[str, Any]:
    run = data.load_run(url, run_id)
    return {**data.run_summary(run),
            "steps": {n: {"status": r.status, "attempts": r.attempts, "exit_code": r.exit_code,
                          "duration": r.duration, "message": r.message,
                          "child_run": r.child_run}
                      for n, r in run.steps.items()}}


def _key(snap: dict[str, Any]) -> str:
    """What counts as a change: statuses, attempts, exit codes, a call's child run (not the
    ticking durations)."""
    steps = {n: (s["status"], s["attempts"], s["exit_code"], s["child_run"])
             for n, s in snap["steps"].items()}
    return json.dumps([snap["status"], snap["exit_code"], steps])


class Watcher:
    """One poller of the store for every subscriber to one thing (a run, the dashboard):
    `poll(last_key)` (on a worker thread) gives the new key, the event to send when the key
    changed (else None), and the seconds to the next poll. It ends when nobody listens,
    or when what it follows is gone (the run was deleted): its streams then end cleanly."""

    def __init__(self, hub: Hub, name: str,
                 poll: Callable[[str | None], tuple[str, dict[str, Any] | None, float]]) -> None:
        self.hub, self.name, self.poll = hub, name, poll
        self.queues: set[asyncio.Queue[dict[str, Any] | None]] = set()
        self.last: dict[str, Any] | None = None
        self.task: asyncio.Task[None] | None = None

    async def _loop(self) -> None:
        key: str | None = None
        try:
            while self.queues:
                try:
                    key, event, wait = await anyio.to_thread.run_sync(self.poll, key)
                except NotFoundError:
                    return  # deleted while watched (`flowsh prune`): nothing more to say
                except Exception:
                    # The store unreadable for a moment (locked, out of file descriptors,
                    # a PostgreSQL restart): the watchers keep watching, a tick later.
                    await asyncio.sleep(POLL * 4)
                    continue
                if event is not None:
                    self.last = event
                    for q in list(self.queues):
                        q.put_nowait(event)
                await asyncio.sleep(wait)
        finally:
            if self.hub.watchers.get(self.name) is self:
                del self.hub.watchers[self.name]
            for q in list(self.queues):
                q.put_nowait(None)


class Hub:
    """The watchers of one app."""

    def __init__(self, url: str | None) -> None:
        self.url = url
        self.watchers: dict[str, Watcher] = {}

    def follow(self, run_id: str) -> AsyncIterator[dict[str, Any]]:
        """A run's `run` events."""
        def poll(key: str | None) -> tuple[str, dict[str, Any] | None, float]:
            snap = snapshot(self.url, run_id)
            # A finished run may start again (resume, retry): watched on, at a slower tick.
            wait = POLL * 4 if snap["status"] in FINISHED_RUN else POLL
            new = _key(snap)
            return new, ({"event": "run", "data": json.dumps(snap)} if new != key else None), wait

        return self._subscribe("run:" + run_id, poll)

    def follow_workflows(self, known: data.Known) -> AsyncIterator[dict[str, Any]]:
        """The dashboard's `workflows` events: every workflow's summary, again each time a
        run starts or ends. The cheap look (the newest runs and the running ones) runs at
        each tick; the summaries are read only when it changed."""
        def poll(key: str | None) -> tuple[str, dict[str, Any] | None, float]:
            new = activity(self.url)
            if new == key:
                return new, None, DASHBOARD_POLL
            return new, {"event": "workflows",
                         "data": json.dumps(data.workflows(self.url, known))}, DASHBOARD_POLL

        return self._subscribe("workflows", poll)

    async def _subscribe(self, name: str, poll: Callable[[str | None], tuple[
            str, dict[str, Any] | None, float]]) -> AsyncIterator[dict[str, Any]]:
        watcher = self.watchers.get(name)
        if watcher is None:
            watcher = self.watchers[name] = Watcher(self, name, poll)
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        watcher.queues.add(queue)
        if watcher.last is not None:
            queue.put_nowait(watcher.last)
        if watcher.task is None or watcher.task.done():
            watcher.task = asyncio.create_task(watcher._loop())
        try:
            while True:
                event = await queue.get()
                if event is None:
                    return
                yield event
        finally:
            watcher.queues.discard(queue)
            if not watcher.queues and watcher.task is not None:
                watcher.task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await watcher.task


DASHBOARD_POLL = 0.5
ACTIVITY_RUNS = 20


def activity(url: str | None) -> str:
    """What changes when a run starts or ends anywhere: the newest runs and the running
    ones, with their statuses (a dead runner's run turns `crashed` here too)."""
    with data.backend(url) as b:
        newest = data.list_page(b, None, None, ACTIVITY_RUNS, 0)
        running = data.list_page(b, None, frozenset({RUNNING}), 1000, 0)
        seen = {r.run_id: r for r in [*newest, *running]}
        return json.dumps(sorted((i, check_liveness(b, r, read_only=True).status)
                                 for i, r in seen.items()))


def _read_from(path: Path | None, offset: int) -> tuple[bytes, int]:
    if path is None:
        return b"", offset
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            chunk = fh.read(LOG_CHUNK)
    except (OSError, ValueError, OverflowError):
        return b"", offset
    # Whole lines only (a secret cut in two would pass the masker), unless a line is huge.
    end = chunk.rfind(b"\n") + 1
    if end == 0 and len(chunk) < LOG_CHUNK:
        return b"", offset
    chunk = chunk[:end] if end else chunk
    return chunk, offset + len(chunk)


async def follow_log(url: str | None, run_id: str, step: str,
                     offset: int = 0) -> AsyncIterator[dict[str, Any]]:
    """The log from `offset` on, in `log` events (masked lines), until the step is done and
    nothing is left to read; then one `end` event with the step's status (`gone` when the
    run was deleted meanwhile).

    Of what is already written, at most the last `LOG_START_MAX` bytes are sent, after a
    `skip` event: a 1 GiB log must not be pushed into a browser (the API's tail and
    `flowsh logs` have the rest). Memory stays bounded: one `LOG_CHUNK` at a time."""
    run = await anyio.to_thread.run_sync(data.load_run, url, run_id)
    mask = await anyio.to_thread.run_sync(data.masker_for, run)
    start = await anyio.to_thread.run_sync(_start_at, data.log_path(run, step), offset)
    if start > offset:
        yield {"event": "skip", "id": str(start),
               "data": json.dumps({"skipped": start - offset, "offset": start})}
        offset = start
    while True:
        path = data.log_path(run, step)
        chunk, offset = await anyio.to_thread.run_sync(_read_from, path, offset)
        if chunk:
            text = mask(chunk.decode("utf-8", errors="replace"))
            yield {"event": "log", "id": str(offset),
                   "data": json.dumps({"text": text, "offset": offset})}
            continue
        status = run.steps[step].status
        if status in STEP_DONE or run.status in FINISHED_RUN:
            # The last bytes may lack their newline: send what remains (less than a
            # chunk, or the file grew meanwhile: read on).
            tail = await anyio.to_thread.run_sync(_rest, path, offset)
            if tail:
                offset += len(tail)
                yield {"event": "log", "id": str(offset), "data": json.dumps(
                    {"text": mask(tail.decode("utf-8", errors="replace")), "offset": offset})}
                if len(tail) == LOG_CHUNK:
                    continue
            yield {"event": "end", "data": json.dumps({"status": status, "offset": offset})}
            return
        await asyncio.sleep(LOG_POLL)
        try:
            run = await anyio.to_thread.run_sync(data.load_run, url, run_id)
        except NotFoundError:  # deleted while followed (`flowsh prune`, a hand)
            yield {"event": "end", "data": json.dumps({"status": "gone", "offset": offset})}
            return


LOG_START_MAX = 1024 * 1024


def _start_at(path: Path | None, offset: int) -> int:
    """Where a stream asked to start at `offset` starts: there, or at the first whole line
    of the last `LOG_START_MAX` bytes written (a cut line when there is none)."""
    try:
        size = path.stat().st_size if path is not None else 0
    except OSError:
        return offset
    if size - offset <= LOG_START_MAX:
        return offset
    start = size - LOG_START_MAX
    try:
        with path.open("rb") as fh:  # type: ignore[union-attr]
            fh.seek(start - 1)
            head = fh.read(LOG_CHUNK)
    except OSError:
        return start
    newline = head.find(b"\n")
    return start + newline if newline >= 0 else start


def _rest(path: Path | None, offset: int) -> bytes:
    if path is None:
        return b""
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            return fh.read(LOG_CHUNK)
    except (OSError, ValueError, OverflowError):
        return b""
