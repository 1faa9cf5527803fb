"""The flowsh side: an Executor that sends each step to a Celery queue.

start() publishes the StepRequest as a task; wait() polls the results (one backend read
per running step every `poll` seconds) between selects on a wake-up pipe, so Ctrl-C is
seen at once; cancel_all() revokes with terminate=True, which the worker turns into TERM
then KILL of the step's process group. The step's output and $FLOWSH_OUTPUT come back in
the result and are written to the local log and output file, where the engine reads them.
"""

from __future__ import annotations

import contextlib
import os
import select
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from flowsh.api import EXIT_TIMEOUT, Outcome, OutputCallback, StepRequest, UsageError, WakePipe

from flowsh_celery.app import TASK_NAME, make_app, settings

OPTIONS = ("broker", "backend", "queue", "poll", "connect_timeout", "result_grace")


class CeleryUnavailable(UsageError):
    """The broker or result backend cannot be reached (exit code 2)."""


@dataclass
class _Job:
    req: StepRequest
    result: Any  # celery.result.AsyncResult
    sent: float
    started: float | None = None  # when the backend first said STARTED
    worker: str | None = None
    cancel_by: float | None = None  # revoked: stop waiting for the worker after this


def _safe(url: str) -> str:
    from kombu.utils.url import maybe_sanitize_url

    return str(maybe_sanitize_url(url))


class CeleryExecutor:
    """Runs each step as a Celery task on whichever worker consumes `queue`."""

    def __init__(
        self,
        on_output: OutputCallback | None = None,
        mask: Callable[[str], str] | None = None,
        broker: str | None = None,
        backend: str | None = None,
        queue: str | None = None,
        poll: float = 0.05,
        connect_timeout: float = 3.0,
        result_grace: float = 60.0,
        **unknown: Any,
    ) -> None:
        if unknown:
            got = ", ".join(sorted(unknown))
            raise UsageError(f"executor 'celery': unknown executor_options {got} "
                             f"(known: {', '.join(OPTIONS)})")
        for name, value in (("poll", poll), ("connect_timeout", connect_timeout),
                            ("result_grace", result_grace)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise UsageError(f"executor 'celery': executor_options.{name} must be a "
                                 f"number of seconds > 0 (got {value!r})")
        self.on_output = on_output
        self.mask = mask
        self.poll = float(poll)
        self.result_grace = float(result_grace)
        self.broker, self.backend, self.queue = settings(broker, backend, queue)
        if self.backend is None:
            raise UsageError(f"executor 'celery': broker {_safe(self.broker)} needs a result "
                             "backend: set executor_options.backend or FLOWSH_CELERY_BACKEND")
        self.app = make_app(self.broker, self.backend, self.queue, connect_timeout)
        self._check(connect_timeout)
        self._jobs: dict[str, _Job] = {}
        self._done: list[tuple[str, Outcome]] = []
        self._wake = WakePipe()

    def _check(self, timeout: float) -> None:
        """Fail now, in one line, rather than hang on the first step."""
        try:
            with self.app.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0,
                                       timeout=timeout)
        except Exception as exc:
            self.app.close()
            raise CeleryUnavailable(
                f"celery broker {_safe(self.broker)} unreachable: {_reason(exc)}") from None
        backend = self.app.backend
        client = getattr(backend, "client", None)
        if client is not None and hasattr(client, "ping"):  # redis: the usual backend
            try:
                client.ping()
            except Exception as exc:
                self.app.close()
                raise CeleryUnavailable(
                    f"celery result backend {_safe(str(self.backend))} unreachable: "
                    f"{_reason(exc)}") from None

    # -- interface ------------------------------------------------------------------

    def start(self, request: StepRequest) -> None:
        now = time.time()
        self._append_to(request.log_path, "")  # exists from the start, as a local step's
        secrets = list(getattr(self.mask, "values", None) or [])
        try:
            # argsrepr: what `celery inspect`, events and the worker's debug log show of
            # the task; the request holds the environment (params, secrets) in clear.
            result = self.app.send_task(
                TASK_NAME, args=[asdict(request), secrets], queue=self.queue,
                argsrepr=f"(<flowsh step {request.key}>,)", kwargsrepr="{}",
                retry=True, retry_policy={"max_retries": 2, "interval_start": 0,
                                          "interval_step": 0.5, "interval_max": 1})
        except Exception as exc:
            self._done.append((request.key, Outcome(
                exit_code=127, started_at=now, ended_at=time.time(),
                error=f"cannot send step to celery broker {_safe(self.broker)}: "
                      f"{_reason(exc)}")))
            return
        self._jobs[request.key] = _Job(req=request, result=result, sent=now)

    def wait(self, timeout: float | None) -> list[tuple[str, Outcome]]:
        end = None if timeout is None else time.monotonic() + timeout
        while not self._done:
            self._poll()
            if self._done:
                break
            wait = self.poll if self._jobs else None
            if end is not None:
                left = max(0.0, end - time.monotonic())
                wait = left if wait is None else min(wait, left)
            ready, _, _ = select.select([self._wake.read_fd], [], [], wait)
            if ready:
                self._wake.drain()
                break
            if end is not None and time.monotonic() >= end:
                break
        done, self._done = self._done, []
        return done

    def wake(self) -> None:
        self._wake.wake()

    def cancel_all(self) -> None:
        now = time.time()
        for job in self._jobs.values():
            if job.cancel_by is not None:
                continue
            # The worker TERMs the step's group and KILLs it after the grace period;
            # past that (and a margin for the round trip), stop waiting for it.
            job.cancel_by = now + job.req.kill_grace + 10.0
            try:
                self.app.control.revoke(job.result.id, terminate=True, signal="SIGTERM")
            except Exception as exc:
                self._log(job, f"flowsh: cannot revoke celery task {job.result.id}: "
                               f"{_reason(exc)}")

    def running(self) -> int:
        return len(self._jobs)

    def close(self) -> None:
        for job in self._jobs.values():  # only after an error in the engine itself
            with contextlib.suppress(Exception):
                self.app.control.revoke(job.result.id, terminate=True, signal="SIGKILL")
        self._jobs.clear()
        self._wake.close()
        with contextlib.suppress(Exception):
            self.app.close()

    # -- internals ------------------------------------------------------------------

    def _poll(self) -> None:
        now = time.time()
        for key, job in list(self._jobs.items()):
            try:
                state = job.result.state
            except Exception as exc:  # backend gone: give up on the step after the grace
                if now - job.sent > self.result_grace:
                    self._give_up(key, job, f"result backend unreachable: {_reason(exc)}")
                continue
            if state in ("SUCCESS", "FAILURE", "REVOKED"):
                self._collect(key, job, state)
            elif job.cancel_by is not None and now >= job.cancel_by:
                self._give_up(key, job, "worker did not confirm the cancellation",
                              interrupted=True)
            elif state == "STARTED" and job.started is None:
                job.started = now
                # Read once: each .info is a backend read, and the task may
                # have moved on (REVOKED gives an exception) between two reads.
                info = job.result.info
                job.worker = info.get("hostname") if isinstance(info, dict) else None
            elif job.started is not None and job.req.timeout and \
                    now > job.started + job.req.timeout + job.req.kill_grace + self.result_grace:
                # The worker enforces the timeout; silence this long means it is gone.
                with contextlib.suppress(Exception):
                    self.app.control.revoke(job.result.id, terminate=True, signal="SIGKILL")
                self._give_up(key, job, f"no result from worker {job.worker or '?'} "
                                        "after the step's timeout (worker lost?)",
                              timed_out=True)

    def _collect(self, key: str, job: _Job, state: str) -> None:
        del self._jobs[key]
        value = job.result.result
        now = time.time()
        if state == "SUCCESS" and isinstance(value, dict):
            if value.get("dropped"):
                self._log(job, f"flowsh: [{value['dropped']} bytes of output before this "
                               "were left on the worker]")
            self._emit(job, value.get("output") or "")
            self._write_outputs(job, value.get("outputs") or "")
            outcome = Outcome(
                exit_code=int(value["exit_code"]),
                started_at=float(value["started_at"]),
                ended_at=float(value["ended_at"]),
                signal=value.get("signal"),
                timed_out=bool(value.get("timed_out")),
                interrupted=bool(value.get("interrupted")) or job.cancel_by is not None,
                error=value.get("error"),
                extra={"worker": str(value.get("worker", "")),
                       "worker_pid": str(value.get("pid", ""))},
            )
        elif state == "REVOKED" and job.cancel_by is not None:
            self._log(job, f"flowsh: celery task {job.result.id} revoked on worker "
                           f"{job.worker or '?'}")
            outcome = Outcome(exit_code=143, signal=15, interrupted=True,
                              started_at=job.started or job.sent, ended_at=now)
        elif state == "REVOKED":
            # Not our doing: its pool process was killed (celery reports some of those as
            # revoked, others as WorkerLostError) or someone ran `celery control revoke`.
            # A failure, so the step's retry policy applies; never "interrupted", which
            # would not fail the run.
            reason = f"celery task revoked on worker {job.worker or '?'} outside flowsh " \
                     f"(pool process killed, or revoked by hand): {_reason(value)}"
            self._log(job, f"flowsh: {reason}")
            outcome = Outcome(exit_code=1, started_at=job.started or job.sent, ended_at=now,
                              error=self._mask(reason))
        else:
            reason = f"celery task failed on worker {job.worker or '?'}: " \
                     f"{type(value).__name__}: {value}"
            self._log(job, f"flowsh: {reason}")
            outcome = Outcome(exit_code=1, started_at=job.started or job.sent, ended_at=now,
                              error=self._mask(reason), interrupted=job.cancel_by is not None)
        with contextlib.suppress(Exception):
            job.result.forget()  # the result has been copied here; keep the backend small
        self._done.append((key, outcome))

    def _give_up(self, key: str, job: _Job, reason: str, *, interrupted: bool = False,
                 timed_out: bool = False) -> None:
        del self._jobs[key]
        self._log(job, f"flowsh: {reason}")
        self._done.append((key, Outcome(
            exit_code=EXIT_TIMEOUT if timed_out else (143 if interrupted else 1),
            started_at=job.started or job.sent, ended_at=time.time(),
            timed_out=timed_out, interrupted=interrupted, error=self._mask(reason))))

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
        if self.on_output is not None:
            for ln in lines:
                self.on_output(job.req.key, ln)

    def _log(self, job: _Job, line: str) -> None:
        self._append(job, self._mask(line) + "\n")

    def _append(self, job: _Job, text: str) -> None:
        self._append_to(job.req.log_path, text)

    @staticmethod
    def _append_to(path: str, text: str) -> None:
        with contextlib.suppress(OSError):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                if text:
                    os.write(fd, text.encode())
            finally:
                os.close(fd)

    @staticmethod
    def _write_outputs(job: _Job, text: str) -> None:
        path = job.req.env.get("FLOWSH_OUTPUT")
        if not path:
            return
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__
