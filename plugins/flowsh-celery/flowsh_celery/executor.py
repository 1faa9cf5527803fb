"""The flowsh side: an Executor that sends each step to a Celery queue.

start() marks the attempt as the one that may run (app.py: the attempt protocol) and
publishes the StepRequest as a task that expires with the step's queue timeout. A thread
blocks on this runner's event list in Redis (BLPOP) and wakes wait() when a worker starts
or ends an attempt: no per-task polling. Once a second wait() also checks deadlines: an
attempt no worker claimed within `queue_timeout` is settled (no worker can start it
afterwards) and fails; a started attempt whose heartbeat is gone fails as "worker lost"
and its retry policy applies. cancel_all() settles the attempts nobody started and asks
the workers to stop the others.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import json
import os
import select
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from flowsh.api import (
    EXIT_TIMEOUT,
    Outcome,
    OutputCallback,
    Placement,
    StepRequest,
    UsageError,
    WakePipe,
)

from flowsh_celery.app import (
    ADVERT_TTL,
    DEFAULT_LOST_AFTER,
    DEFAULT_QUEUE_TIMEOUT,
    PREFIX,
    RUN_TTL,
    SETTLE,
    TASK_NAME,
    events_key,
    make_app,
    run_key,
    settings,
    task_key,
    want_key,
)
from flowsh_celery.options import check_options
from flowsh_celery.publish import task_envelope

# Redis transport options that matter to consumers only: the runner may publish itself.
WORKER_SIDE_OPTIONS = {"visibility_timeout", "unacked_restore_interval",
                       "unacked_restore_throttle"}
AWAY_LIMIT = 15.0  # at least this long for a result backend away (see away_limit)
TICK = 1.0  # deadlines (queue timeout, lost worker) are checked this often
EXIT_LOST = 1  # a lost worker fails the attempt; `retries` apply


class CeleryUnavailable(UsageError):
    """The broker or result backend cannot be reached (exit code 2)."""


@dataclass
class _Job:
    req: StepRequest
    task_id: str
    run_id: str
    queue: str
    sent: float
    queue_timeout: float
    started: float | None = None  # when the worker claimed it
    worker: str | None = None
    cancelling: bool = False
    suspect: bool = False  # its heartbeat was missing at the last check
    warned: bool = False  # its log says the result backend did not answer
    message: str | None = None  # the task as pushed onto a Redis broker's list


def _safe(url: str) -> str:
    from kombu.utils.url import maybe_sanitize_url

    return str(maybe_sanitize_url(url))


class CeleryExecutor:
    """Runs each step as a Celery task on whichever worker consumes its queue."""

    def __init__(
        self,
        on_output: OutputCallback | None = None,
        mask: Callable[[str], str] | None = None,
        broker: str | None = None,
        backend: str | None = None,
        queue: str | None = None,
        connect_timeout: float = 3.0,
        lost_after: float = DEFAULT_LOST_AFTER,
        queue_timeout: float = DEFAULT_QUEUE_TIMEOUT,
        check_workers: bool = True,
        transport_options: dict[str, Any] | None = None,
        **unknown: Any,
    ) -> None:
        check_options({"broker": broker, "backend": backend, "queue": queue,
                       "connect_timeout": connect_timeout, "lost_after": lost_after,
                       "queue_timeout": queue_timeout, "check_workers": check_workers,
                       "transport_options": transport_options, **unknown})
        self.lost_after = float(lost_after)
        self.queue_timeout = float(queue_timeout)
        # How long a result backend that stopped answering is waited for before the
        # attempts it holds fail as lost (a restart takes seconds).
        self.away_limit = max(AWAY_LIMIT, 2 * self.lost_after)
        self.check_workers = check_workers
        self.on_output = on_output
        self.mask = mask
        self.broker, backend_url, self.queue = settings(broker, backend, queue)
        if backend_url is None:
            raise UsageError(f"executor 'celery': broker {_safe(self.broker)} needs a result "
                             "backend: set executor_options.backend or FLOWSH_CELERY_BACKEND "
                             "(a Redis URL)")
        if not backend_url.startswith(("redis://", "rediss://", "unix://")):
            raise UsageError(f"executor 'celery': result backend {_safe(backend_url)} is not "
                             "Redis; flowsh-celery keeps each attempt's liveness there and "
                             "needs redis:// or rediss://")
        self.backend: str = backend_url
        self.connect_timeout = float(connect_timeout)
        self.transport_options = dict(transport_options or {})
        self._app: Any = None
        import redis

        self.r = redis.Redis.from_url(self.backend, socket_connect_timeout=connect_timeout,
                                      socket_timeout=max(connect_timeout, 10.0))
        # A Redis broker takes the task as one LPUSH (publish.py), in the same round trip
        # as the attempt's keys when it is the result backend too; Celery itself is then
        # not even imported here. Transport options other than the visibility timeout
        # (a key prefix, priorities) change where kombu puts messages: Celery does it.
        self.fast = self.broker.startswith(("redis://", "rediss://", "unix://")) and \
            set(self.transport_options) <= WORKER_SIDE_OPTIONS
        self.rb = self.r if self.broker == self.backend or not self.fast else \
            redis.Redis.from_url(self.broker, socket_connect_timeout=connect_timeout,
                                 socket_timeout=max(connect_timeout, 10.0))
        self._check(connect_timeout)
        self._settle = self.r.register_script(SETTLE)
        self.client = uuid.uuid4().hex
        self._jobs: dict[str, _Job] = {}
        self._by_task: dict[str, _Job] = {}
        self._done: list[tuple[str, Outcome]] = []
        self._placed: dict[str, Placement] = {}
        self._wake = WakePipe()
        self._events: collections.deque[dict[str, Any]] = collections.deque()
        self._runs: dict[str, float] = {}  # run id -> when its liveness key was refreshed
        self._queues_ok: dict[str, float] = {}  # queue -> when a worker was last seen on it
        self._next_tick = 0.0
        self._away_since: float | None = None  # the result backend stopped answering
        self._fresh = False  # a placement changed since wait() last returned
        self._closing = threading.Event()
        self._listener: threading.Thread | None = None

    @property
    def app(self) -> Any:
        """The Celery app, made when first needed (a non-Redis broker, a revoke)."""
        if self._app is None:
            self._app = make_app(self.broker, self.backend, self.queue, self.connect_timeout,
                                 self.transport_options)
        return self._app

    def _check(self, timeout: float) -> None:
        """Fail now, in one line, rather than hang on the first step."""
        try:
            self.r.ping()
        except Exception as exc:
            what = "broker" if self.broker == self.backend else "result backend"
            raise CeleryUnavailable(
                f"celery {what} {_safe(self.backend)} unreachable: {_reason(exc)}") from None
        if self.broker == self.backend:
            return  # the same Redis answered just now
        try:
            if self.fast:
                self.rb.ping()
            else:
                with self.app.connection_for_write() as conn:
                    conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0,
                                           timeout=timeout)
        except Exception as exc:
            if self._app is not None:
                self._app.close()
            raise CeleryUnavailable(
                f"celery broker {_safe(self.broker)} unreachable: {_reason(exc)}") from None

    def _revoke(self, task_id: str, terminate: bool = False) -> None:
        """Tell live workers at once (the cancel key reaches them within a second anyway:
        without Celery loaded, that is enough and spares its import)."""
        if self._app is None and self.fast:
            return
        with contextlib.suppress(Exception):
            if terminate:
                self.app.control.revoke(task_id, terminate=True, signal="SIGTERM")
            else:
                self.app.control.revoke(task_id)

    # -- interface ------------------------------------------------------------------

    def start(self, request: StepRequest) -> int | None:
        now = time.time()
        queue = request.queue or self.queue
        self._listen()
        missing = self._no_worker(queue)
        if missing is not None:
            self._done.append((request.key, Outcome(
                exit_code=1, started_at=now, ended_at=now, error=missing)))
            return None
        run_id = request.run_id or "-"
        task_id = uuid.uuid4().hex
        wait = request.queue_timeout or self.queue_timeout
        secrets = list(getattr(self.mask, "values", None) or [])
        meta = {"client": self.client, "run_id": run_id, "key": request.key,
                "lost_after": self.lost_after}
        # argsrepr: what `celery inspect`, events and the worker's debug log show of the
        # task; the request holds the environment (params, secrets) in clear.
        args = [asdict(request), secrets, meta]
        argsrepr = f"(<flowsh step {request.key}>,)"
        try:
            # The attempt is the wanted one before any worker can see it; the run is live.
            pipe = self.r.pipeline(transaction=False)
            pipe.set(want_key(run_id, request.key), task_id, ex=7 * 86400)
            # At every submit: a Redis restarted without persistence lost it, and a worker
            # refuses the attempt of a run that is not live.
            pipe.set(run_key(run_id), "1", ex=RUN_TTL)
            self._runs[run_id] = time.monotonic()
            message: str | None = None
            if self.fast:
                message = task_envelope(TASK_NAME, task_id, queue, args, wait, argsrepr)
                if self.rb is self.r:
                    pipe.lpush(queue, message)
                    pipe.execute()
                else:
                    pipe.execute()
                    self.rb.lpush(queue, message)
            else:
                pipe.execute()
                self.app.send_task(
                    TASK_NAME, args=args, queue=queue, task_id=task_id, expires=wait,
                    argsrepr=argsrepr, kwargsrepr="{}",
                    retry=True, retry_policy={"max_retries": 2, "interval_start": 0,
                                              "interval_step": 0.5, "interval_max": 1})
        except Exception as exc:
            self._done.append((request.key, Outcome(
                exit_code=127, started_at=now, ended_at=time.time(),
                error=f"cannot send step to celery broker {_safe(self.broker)}: "
                      f"{_reason(exc)}")))
            return None
        job = _Job(req=request, task_id=task_id, run_id=run_id, queue=queue, sent=now,
                   queue_timeout=wait, message=message)
        self._jobs[request.key] = job
        self._by_task[task_id] = job
        self._placed[request.key] = Placement(task_id=task_id, queue=queue, queued_at=now)
        return None

    def placements(self) -> dict[str, Placement]:
        placed, self._placed = self._placed, {}
        return placed

    def wait(self, timeout: float | None) -> list[tuple[str, Outcome]]:
        end = None if timeout is None else time.monotonic() + timeout
        while not self._done:
            self._handle_events()
            if time.monotonic() >= self._next_tick:
                self._tick()
            if self._done or self._fresh:
                break
            wait = max(0.0, self._next_tick - time.monotonic()) if self._jobs else None
            if end is not None:
                left = max(0.0, end - time.monotonic())
                wait = left if wait is None else min(wait, left)
            ready, _, _ = select.select([self._wake.read_fd], [], [], wait)
            if ready:
                self._wake.drain()
                if not self._events:
                    break  # woken from outside (Ctrl-C): let the engine look
            elif end is not None and time.monotonic() >= end:
                break
        self._handle_events()
        # A worker's start is news once: a caller that does not take placements (the
        # engine draining an interrupt) must not see wait() return at once for ever.
        self._fresh = False
        done, self._done = self._done, []
        return done

    def wake(self) -> None:
        self._wake.wake()

    def cancel_all(self) -> None:
        now = time.time()
        for key, job in list(self._jobs.items()):
            if job.cancelling:
                continue
            job.cancelling = True
            settled, claimed = self._settle_job(job, "x:cancelled")
            if settled and not claimed:  # no worker will ever start it
                self._unqueue(job)
                self._finish(key, job, Outcome(exit_code=143, started_at=now, ended_at=now,
                                               interrupted=True,
                                               error="interrupted before a worker took it"))
                continue
            # Started: the worker sees the cancel key within a second and stops the step
            # (TERM, then KILL after kill_grace); the revoke makes it immediate on a live
            # worker. Its end (interrupted) arrives as an event; a worker that is gone is
            # found by its missing heartbeat.
            with contextlib.suppress(Exception):
                self.r.set(task_key("cancel", job.task_id), "1", ex=86400)
            self._revoke(job.task_id, terminate=True)

    def running(self) -> int:
        return len(self._jobs)

    def close(self) -> None:
        for job in list(self._jobs.values()):  # only after an error in the engine itself
            with contextlib.suppress(Exception):
                self._settle_job(job, "x:closed")
                self.r.set(task_key("cancel", job.task_id), "1", ex=86400)
        self._jobs.clear()
        # The run is over: whatever of it is still queued anywhere must never start.
        with contextlib.suppress(Exception):
            if self._runs:
                self.r.delete(*(run_key(r) for r in self._runs))
        self._closing.set()
        if self._listener is not None:
            with contextlib.suppress(Exception):  # unblock its BLPOP now, not in a second
                self.r.rpush(events_key(self.client), "{}")
            self._listener.join(timeout=3)
        with contextlib.suppress(Exception):
            self.r.delete(events_key(self.client))
        self._wake.close()
        if self._app is not None:
            with contextlib.suppress(Exception):
                self._app.close()
        with contextlib.suppress(Exception):
            self.r.close()
            if self.rb is not self.r:
                self.rb.close()

    def stop_remote(self, run_id: str, keys: list[str], kill_grace: float) -> list[str]:
        """Settle every attempt of these steps the dead runner left; stop the running ones
        and wait until their heartbeat is gone (the worker stopped them, or its supervisor
        did when the worker died). Raises rather than let a second attempt start."""
        lines: list[str] = []
        running: dict[str, str] = {}
        claimed_ids: list[str] = []
        for key in keys:
            task_id, claimed, beating = self._settle_key(run_id, key, "x:resumed")
            if not task_id:
                continue
            if not claimed:
                lines.append(f"step {key!r} of run {run_id}: its queued celery task "
                             f"{task_id} will not start (given up)")
                continue
            claimed_ids.append(task_id)
            if beating:
                self.r.set(task_key("cancel", task_id), "1", ex=86400)
                self._revoke(task_id, terminate=True)
                running[key] = task_id
            else:
                # Claimed, no heartbeat: its worker died, or is frozen or cut off and may
                # come back; it reads this before it goes on (and its supervisor stops
                # the step once its own heartbeats lapsed).
                self.r.set(task_key("cancel", task_id), "1", ex=86400)
        limit = time.monotonic() + kill_grace + self.lost_after + 5
        while running:
            beats = self.r.exists(*[task_key("beat", t) for t in running.values()])
            if not beats:
                break
            if time.monotonic() > limit:
                left = ", ".join(f"{k} (task {t})" for k, t in running.items())
                raise UsageError(f"run {run_id}: step {left} still runs on a worker that does "
                                 "not confirm it stopped; not starting it again")
            for key, task_id in list(running.items()):
                if not self.r.exists(task_key("beat", task_id)):
                    del running[key]
                    lines.append(f"step {key!r} of run {run_id} was still running on a "
                                 f"worker (celery task {task_id}); stopped it before "
                                 "running it again")
            time.sleep(0.1)
        for key, task_id in running.items():
            lines.append(f"step {key!r} of run {run_id} was still running on a worker "
                         f"(celery task {task_id}); stopped it before running it again")
        for task_id in claimed_ids:  # their ends are in by now (pushed as the beat went)
            self._forget_events(task_id)
        return lines

    def _forget_events(self, task_id: str) -> None:
        """The dead runner's event list: nobody reads it again, and an attempt's end there
        carries its outputs (secret ones in clear) for a day."""
        with contextlib.suppress(Exception):
            raw = self.r.get(task_key("claim", task_id))
            client = json.loads(raw).get("client") if raw else None
            if client and client != self.client:
                self.r.delete(events_key(str(client)))

    # -- internals ------------------------------------------------------------------

    def _listen(self) -> None:
        if self._listener is not None:
            return
        self._listener = threading.Thread(target=self._listen_loop, name="flowsh-celery",
                                          daemon=True)
        self._listener.start()

    def _listen_loop(self) -> None:
        """Block on this runner's event list; hand each event to wait() and wake it."""
        import redis

        r = redis.Redis.from_url(self.backend, socket_timeout=30, socket_connect_timeout=5)
        key = events_key(self.client)
        while not self._closing.is_set():
            try:
                got = r.blpop([key], timeout=1)
            except Exception:
                self._closing.wait(0.5)  # Redis away: deadlines are checked on our side
                continue
            if got is None:
                continue
            with contextlib.suppress(ValueError):
                self._events.append(json.loads(got[1]))
                self._wake.wake()
        with contextlib.suppress(Exception):
            r.close()

    def _handle_events(self) -> None:
        while self._events:
            ev = self._events.popleft()
            job = self._by_task.get(str(ev.get("t")))
            if job is None or job.req.key not in self._jobs:
                continue
            kind = ev.get("e")
            if kind == "start":
                job.started = float(ev.get("at") or time.time())
                job.worker = str(ev.get("worker") or "?")
                self._placed[job.req.key] = self._placement(job)
                self._fresh = True
            elif kind == "end":
                self._collect(job, ev)
            elif kind == "lost":
                self._lost(job, str(ev.get("why") or "worker lost"))

    def _placement(self, job: _Job) -> Placement:
        return Placement(task_id=job.task_id, queue=job.queue, queued_at=job.sent,
                         worker=job.worker, started_at=job.started)

    def _tick(self) -> None:
        """Once a second: queue deadlines, heartbeats, the runs' liveness keys."""
        now_m = time.monotonic()
        self._next_tick = now_m + TICK
        if not self._jobs:
            return
        now = time.time()
        try:
            stale = [r for r, at in self._runs.items() if now_m - at > RUN_TTL / 3]
            if stale:
                pipe = self.r.pipeline(transaction=False)
                for run_id in stale:
                    pipe.set(run_key(run_id), "1", ex=RUN_TTL)
                    self._runs[run_id] = now_m
                pipe.execute()
            started = [j for j in self._jobs.values() if j.started is not None]
            if started:
                pipe = self.r.pipeline(transaction=False)
                for job in started:
                    pipe.exists(task_key("beat", job.task_id))
                beats = pipe.execute()
                for job, beat in zip(started, beats, strict=True):
                    if beat:
                        job.suspect = False
                    elif job.suspect:  # gone at two checks in a row, and no end came
                        self._lost(job, f"worker {job.worker} lost: no heartbeat for "
                                        f"{self.lost_after:g}s")
                    else:
                        job.suspect = True
            if not started:
                self.r.ping()  # the queue deadlines below cannot tell it is away
            for job in [j for j in self._jobs.values() if j.started is None]:
                if now - job.sent > job.queue_timeout:
                    self._queue_timeout(job)
            self._away_since = None
        except Exception as exc:
            # The result backend is away: nothing can be decided about the attempts;
            # they are judged again when it answers, up to a bound: a worker cut off from
            # it stops its step within lost_after/2, so once it stayed away for
            # away_limit nothing of the attempts is left to wait for.
            self._note_backend_error(exc)
            if self._away_since is None:
                self._away_since = now_m
            elif now_m - self._away_since >= self.away_limit:
                for job in list(self._jobs.values()):
                    self._lost(job, f"celery result backend {_safe(self.backend)} not "
                                    f"answering for {self.away_limit:g}s: {_reason(exc)}")

    def _note_backend_error(self, exc: BaseException) -> None:
        for job in self._jobs.values():
            if not job.warned:
                self._log(job, f"flowsh: result backend {_safe(self.backend)} not "
                               f"answering: {_reason(exc)}")
                job.warned = True

    def _queue_timeout(self, job: _Job) -> None:
        settled, claimed = self._settle_job(job, "x:queue-timeout")
        if claimed or not settled:
            return  # a worker took it just now: its start event is on its way
        self._revoke(job.task_id)
        self._unqueue(job)
        reason = (f"no worker started step {job.req.key!r} within its queue_timeout "
                  f"({job.queue_timeout:g}s) on celery queue {job.queue!r}; it will not run")
        now = time.time()
        self._finish(job.req.key, job, Outcome(exit_code=EXIT_TIMEOUT, started_at=now,
                                               ended_at=now, error=reason))

    def _unqueue(self, job: _Job) -> None:
        """Take a given-up task off a Redis broker's list: it holds the step's environment
        (secret params in clear) and would stay there for ever with no worker."""
        if job.message is not None:
            with contextlib.suppress(Exception):
                self.rb.lrem(job.queue, 1, job.message)

    def _lost(self, job: _Job, why: str) -> None:
        # Settled and told to stop, in case it is only stalled (a stopped process, a
        # network partition): it must not come back to life next to the retry.
        with contextlib.suppress(Exception):
            self._settle_job(job, "x:lost")
            self.r.set(task_key("cancel", job.task_id), "1", ex=86400)
        now = time.time()
        outcome = Outcome(exit_code=143 if job.cancelling else EXIT_LOST,
                          started_at=job.started or now, ended_at=now,
                          interrupted=job.cancelling, error=self._mask(why))
        self._finish(job.req.key, job, outcome)

    def _settle_job(self, job: _Job, value: str) -> tuple[bool, bool]:
        """(whether this call settled the attempt, whether a worker had claimed it)."""
        try:
            task_id, claimed, _ = self._settle_key(job.run_id, job.req.key, value,
                                                   expected=job.task_id)
        except Exception:
            return False, True
        return bool(task_id), bool(claimed)

    def _settle_key(self, run_id: str, key: str, value: str,
                    expected: str = "") -> tuple[str, int, int]:
        task_id, claimed, beating = self._settle(keys=[want_key(run_id, key)],
                                                 args=[expected, value, PREFIX])
        task_id = task_id.decode() if isinstance(task_id, bytes) else str(task_id)
        return task_id, int(claimed), int(beating)

    def _no_worker(self, queue: str) -> str | None:
        """None when a worker consuming `queue` reports to this result backend."""
        if not self.check_workers:
            return None
        now = time.monotonic()
        if now - self._queues_ok.get(queue, -1e9) < ADVERT_TTL / 2:
            return None
        try:
            names = sorted(n.decode() for n in self.r.smembers(f"{PREFIX}workers"))
            entries = self.r.mget([f"{PREFIX}worker:{n}" for n in names]) if names else []
            # A Redis broker: who consumes there, from the broker itself (a worker that
            # reports here but reads another broker is no consumer of this queue).
            consumers: dict[str, list[str]] = {}
            if self.fast:
                for raw in self._registry(self.rb, "consumer"):
                    with contextlib.suppress(ValueError, AttributeError, KeyError):
                        info = json.loads(raw)
                        consumers[str(info["name"])] = list(info.get("queues") or [])
        except Exception as exc:
            return f"cannot read the workers' registry from {_safe(self.backend)}: " \
                   f"{_reason(exc)}"
        seen = []
        for name, raw in zip(names, entries, strict=True):
            if raw is None:
                continue
            with contextlib.suppress(ValueError, AttributeError):
                info = json.loads(raw)
                queues = info.get("queues") or []
                # It reports here; when it says so in its broker too (a Redis one), that
                # must be this broker.
                if queue in queues and self.fast and info.get("consumer") \
                        and queue not in consumers.get(name, []):
                    seen.append(f"{name} (queue {queue} on broker {info.get('broker')})")
                    continue
                if queue in queues:
                    self._queues_ok[queue] = now
                    return None
                seen.append(f"{name} (queues {', '.join(queues)})")
        found = "; workers there: " + ", ".join(seen) if seen else \
            "; no worker reports there at all"
        return (f"no celery worker consumes queue {queue!r} on broker {_safe(self.broker)} "
                f"with result backend {_safe(self.backend)}{found}. Start one with "
                f"`celery -A flowsh_celery.worker worker -Q {queue}` and "
                "FLOWSH_CELERY_BROKER and FLOWSH_CELERY_BACKEND set to those URLs, or set "
                "executor_options.check_workers: false")

    @staticmethod
    def _registry(r: Any, kind: str) -> list[bytes]:
        names = sorted(n.decode() for n in r.smembers(f"{PREFIX}{kind}s"))
        entries = r.mget([f"{PREFIX}{kind}:{n}" for n in names]) if names else []
        return [e for e in entries if e is not None]

    def _collect(self, job: _Job, value: dict[str, Any]) -> None:
        if value.get("dropped"):
            self._log(job, f"flowsh: [{value['dropped']} bytes of output before this "
                           "were left on the worker]")
        self._emit(job, value.get("output") or "")
        job.worker = str(value.get("worker") or job.worker or "?")
        if job.started is None:
            job.started = float(value["started_at"])
        outcome = Outcome(
            exit_code=int(value["exit_code"]),
            started_at=float(value["started_at"]),
            ended_at=float(value["ended_at"]),
            signal=value.get("signal"),
            timed_out=bool(value.get("timed_out")),
            interrupted=bool(value.get("interrupted")) or job.cancelling,
            error=value.get("error"),
            extra={"worker": job.worker, "worker_pid": str(value.get("pid", ""))},
            outputs=_outputs_text(value),
        )
        self._finish(job.req.key, job, outcome)

    def _finish(self, key: str, job: _Job, outcome: Outcome) -> None:
        self._jobs.pop(key, None)
        self._by_task.pop(job.task_id, None)
        self._placed.pop(key, None)
        outcome.placement = self._placement(job)
        if outcome.error and outcome.exit_code != 0:
            self._log(job, f"flowsh: {outcome.error}")
        self._done.append((key, outcome))

    def _mask(self, text: str) -> str:
        return self.mask(text) if self.mask is not None else text

    def _emit(self, job: _Job, text: str) -> None:
        if not text:
            return
        lines = text.split("\n")
        if lines[-1] == "":
            lines.pop()
        lines = [self._mask(ln) for ln in lines]
        self._append(job, "".join(ln + "\n" for ln in lines))
        if self.on_output is not None and job.req.echo:
            for ln in lines:
                self.on_output(job.req.key, ln)

    def _log(self, job: _Job, line: str) -> None:
        self._append(job, self._mask(line) + "\n")

    def _append(self, job: _Job, text: str) -> None:
        _append_to(job.req.log_path, text)


def _append_to(path: str, text: str) -> None:
    if not text:
        return
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _outputs_text(value: dict[str, Any]) -> str:
    """The step's outputs file, byte for byte (OUT-1): undecodable bytes as surrogates, as
    flowsh reads a local step's file; a worker of an older version sent text only."""
    raw = value.get("outputs_b64")
    if isinstance(raw, str):
        try:
            return base64.b64decode(raw).decode("utf-8", "surrogateescape")
        except ValueError:
            pass
    return str(value.get("outputs") or "")
