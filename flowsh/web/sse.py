"""Server-Sent Events: a run's state as it changes, and a step's log as it grows.

One watcher per run reads the store (every `POLL` seconds, on a worker thread) and hands
each change to every subscriber: fifty browsers on one run cost one read per tick, not
fifty, so watching never slows the run down (scripts/bench.py measures it). Logs are
followed per client from a byte offset: reading the new end of a file is cheap.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio.to_thread

from flowsh.state import FAILED, FINISHED_RUN, INTERRUPTED, SKIPPED, SUCCEEDED
from flowsh.web import data

POLL = 0.25
LOG_POLL = 0.25
LOG_CHUNK = 64 * 1024
STEP_DONE = frozenset({SUCCEEDED, FAILED, SKIPPED, INTERRUPTED})  # no more output will come


def snapshot(url: str | None, run_id: str) -> dict[str, Any]:
    run = data.load_run(url, run_id)
    return {**data.run_summary(run),
            "steps": {n: {"status": r.status, "attempts": r.attempts, "exit_code": r.exit_code,
                          "duration": r.duration, "message": r.message}
                      for n, r in run.steps.items()}}


def _key(snap: dict[str, Any]) -> str:
    """What counts as a change: statuses, attempts, exit codes (not the ticking durations)."""
    steps = {n: (s["status"], s["attempts"], s["exit_code"]) for n, s in snap["steps"].items()}
    return json.dumps([snap["status"], snap["exit_code"], steps])


class RunWatcher:
    def __init__(self, url: str | None, run_id: str, hub: Hub) -> None:
        self.url, self.run_id, self.hub = url, run_id, hub
        self.queues: set[asyncio.Queue[dict[str, Any] | None]] = set()
        self.last: dict[str, Any] | None = None
        self.task: asyncio.Task[None] | None = None

    async def _loop(self) -> None:
        key = None
        try:
            while self.queues:
                snap = await anyio.to_thread.run_sync(snapshot, self.url, self.run_id)
                if _key(snap) != key:
                    key, self.last = _key(snap), snap
                    for q in list(self.queues):
                        q.put_nowait(snap)
                if snap["status"] in FINISHED_RUN:
                    # A resume or retry may start it again: subscribers stay, at a slower tick.
                    await asyncio.sleep(POLL * 4)
                else:
                    await asyncio.sleep(POLL)
        finally:
            if self.hub.watchers.get(self.run_id) is self:
                del self.hub.watchers[self.run_id]
            for q in list(self.queues):
                q.put_nowait(None)


class Hub:
    """The run watchers of one app."""

    def __init__(self, url: str | None) -> None:
        self.url = url
        self.watchers: dict[str, RunWatcher] = {}

    async def follow(self, run_id: str) -> AsyncIterator[dict[str, Any]]:
        watcher = self.watchers.get(run_id)
        if watcher is None:
            watcher = self.watchers[run_id] = RunWatcher(self.url, run_id, self)
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        watcher.queues.add(queue)
        if watcher.last is not None:
            queue.put_nowait(watcher.last)
        if watcher.task is None or watcher.task.done():
            watcher.task = asyncio.create_task(watcher._loop())
        try:
            while True:
                snap = await queue.get()
                if snap is None:
                    return
                yield {"event": "run", "data": json.dumps(snap)}
        finally:
            watcher.queues.discard(queue)
            if not watcher.queues and watcher.task is not None:
                watcher.task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await watcher.task


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
    nothing is left to read; then one `end` event with the step's status."""
    run = await anyio.to_thread.run_sync(data.load_run, url, run_id)
    mask = await anyio.to_thread.run_sync(data.masker_for, run)
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
            # The last bytes may lack their newline: send what remains.
            tail = await anyio.to_thread.run_sync(_rest, path, offset)
            if tail:
                offset += len(tail)
                yield {"event": "log", "id": str(offset), "data": json.dumps(
                    {"text": mask(tail.decode("utf-8", errors="replace")), "offset": offset})}
            yield {"event": "end", "data": json.dumps({"status": status, "offset": offset})}
            return
        await asyncio.sleep(LOG_POLL)
        run = await anyio.to_thread.run_sync(data.load_run, url, run_id)


def _rest(path: Path | None, offset: int) -> bytes:
    if path is None:
        return b""
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            return fh.read()
    except (OSError, ValueError, OverflowError):
        return b""
