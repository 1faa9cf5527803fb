"""The worker side: ``celery -A flowsh_celery.worker worker -Q flowsh -n w1@%h``.

Configured from FLOWSH_CELERY_BROKER, FLOWSH_CELERY_BACKEND, FLOWSH_CELERY_QUEUE (the
default queue when the worker is started without ``-Q``) and
FLOWSH_CELERY_TRANSPORT_OPTIONS (JSON). The task runs a step exactly as ``flowsh run``
would on this machine, through flowsh's own LocalExecutor: its own process group, the
step's timeout with TERM then KILL after the grace period.

Before anything starts, the attempt is claimed (app.py): a task whose run is over, whose
attempt was given up, or that was delivered twice does not run. While it runs, the pool
process refreshes the attempt's heartbeat and watches for a cancel request; a forked
supervisor (its own session, so a signal to the worker's group does not reach it) takes
the step's processes down when the pool process dies or stops answering, and tells the
runner at once.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import fields
from typing import Any

from flowsh_celery.app import (
    ADVERT_EVERY,
    ADVERT_TTL,
    CLAIM,
    PREFIX,
    TASK_NAME,
    env_transport_options,
    events_key,
    make_app,
    run_key,
    settings,
    task_key,
    want_key,
)
from flowsh_celery.supervise import SUPERVISE_CODE, SUPERVISE_FD, SUPERVISE_VAR, TAG_VAR

# What travels back: the tail of the output. The whole log stays out of the store.
OUTPUT_CAP = 1 << 20
OUTPUTS_CAP = 1 << 20


def _result(worker: str, code: int, error: str | None = None, **more: Any) -> dict[str, Any]:
    now = time.time()
    return {"exit_code": code, "started_at": now, "ended_at": now, "signal": None,
            "timed_out": False, "interrupted": False, "worker": worker, "pid": os.getpid(),
            "error": error, "output": "", "dropped": 0, "outputs_b64": "", **more}


_SHELLS = {"bash", "sh", "dash", "zsh", "ksh", "mksh", "env"}


def check_paths(req: dict[str, Any], worker: str) -> str | None:
    """What the step needs from this host's filesystem and lacks, in one line."""
    cwd = req.get("cwd", "")
    if not os.path.isdir(cwd):
        return (f"working directory {cwd} does not exist on worker {worker} "
                "(flowsh-celery needs the workflow's directory at the same path)")
    argv = list(req.get("argv") or [])
    if not argv:
        return None
    if argv[0].startswith("/") and not os.path.exists(argv[0]):
        return f"program {argv[0]} does not exist on worker {worker}"
    # A `run:` step is [shell..., -c, text, ...]; a script step [script, args...] or
    # [shell..., script, args...] (`shell: /usr/bin/env bash` is two words). The script is
    # the first absolute path after the shell's words; a script's own args are left alone.
    if "-c" in argv[1:3] or os.path.basename(argv[0]) not in _SHELLS:
        return None
    for arg in argv[1:3]:
        if arg.startswith("/"):
            if not os.path.exists(arg):
                return f"script {arg} does not exist on worker {worker}"
            break
        if os.path.basename(arg) not in _SHELLS:
            break
    return None


def run_request(data: dict[str, Any], secrets: list[str], worker: str,
                beat: Any = None) -> dict[str, Any]:
    """Run one StepRequest (as a dict) here and return its outcome as a dict.

    The log and $FLOWSH_OUTPUT go to a private temporary directory on this machine, not
    to the paths in the request (those are the runner's host's): their contents are
    returned. `beat(pgid)` is called about every second while the step runs; it returns
    True when the attempt must stop.
    """
    from flowsh.api import LocalExecutor, Masker, StepRequest

    known = {f.name for f in fields(StepRequest)}
    req_fields = {k: v for k, v in data.items() if k in known}
    missing = check_paths(req_fields, worker)
    if missing is not None:
        return _result(worker, 127, missing)
    tmp = tempfile.mkdtemp(prefix="flowsh-celery-")
    try:
        log_path = os.path.join(tmp, "step.log")
        out_path = os.path.join(tmp, "step.out")
        with open(out_path, "w"):
            pass
        env = dict(req_fields.get("env") or {})
        env["FLOWSH_OUTPUT"] = out_path
        env["CELERY_WORKER"] = worker
        req = StepRequest(**{**req_fields, "env": env, "log_path": log_path})
        masker = Masker(secrets)
        executor = LocalExecutor(mask=masker if masker else None)
        stop: list[int] = []

        def on_signal(signum: int, _frame: object) -> None:
            stop.append(signum)
            executor.wake()

        # A revoke with terminate=True signals this pool process: pass it on to the
        # step's process group the way flowsh does on Ctrl-C, then report it.
        old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            pgid = executor.start(req)
            done: list[Any] = []
            cancelled = beat is not None and beat(pgid)
            if cancelled:
                executor.cancel_all()
            tick = getattr(beat, "__self__", None)
            every = float(getattr(tick, "every", 1.0))
            while not done:
                if stop and not cancelled:
                    executor.cancel_all()
                    cancelled = True
                done = executor.wait(every if beat is not None else None)
                if beat is not None and not done and beat(pgid) and not cancelled:
                    executor.cancel_all()
                    cancelled = True
            executor.close()
        finally:
            for s, h in old.items():
                signal.signal(s, h)
        outcome = done[0][1]
        output, dropped = _tail(log_path, OUTPUT_CAP)
        # OUT-1: outputs byte for byte (a Latin-1 name, a binary checksum); as text the
        # result would carry U+FFFD for each byte that is not UTF-8.
        raw, _ = _tail_bytes(out_path, OUTPUTS_CAP)
        return {
            "exit_code": outcome.exit_code,
            "started_at": outcome.started_at,
            "ended_at": outcome.ended_at,
            "signal": outcome.signal,
            "timed_out": outcome.timed_out,
            "interrupted": outcome.interrupted,
            "error": outcome.error,
            "worker": worker,
            "pid": os.getpid(),
            "output": output,
            "dropped": dropped,
            "outputs_b64": base64.b64encode(raw).decode("ascii"),
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _tail(path: str, cap: int) -> tuple[str, int]:
    """The last `cap` bytes of a file as text, and how many bytes were left out."""
    data, dropped = _tail_bytes(path, cap)
    return data.decode("utf-8", "replace"), dropped


def _tail_bytes(path: str, cap: int) -> tuple[bytes, int]:
    """The last `cap` bytes of a file, from a line boundary, and how many were left out."""
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            dropped = max(0, size - cap)
            fh.seek(dropped)
            data = fh.read()
    except FileNotFoundError:
        return b"", 0
    if dropped:
        # Start at a line boundary so the first line shown is whole.
        cut = data.find(b"\n")
        if 0 <= cut < len(data) - 1:
            dropped += cut + 1
            data = data[cut + 1:]
    return data, dropped


# -- the supervisor (flowsh_celery/supervise.py) --------------------------------------------
# One per pool process, started at its first attempt and kept. Forked, then exec'd as
# `python -` with its code on stdin: its command line names no celery module, so killing
# the worker's processes by name (`pkill -9 -f celery`) leaves it to stop the step.


_supervisor: dict[int, int] = {}  # pool pid -> write end of its supervisor's pipe


def _supervisor_fd(backend: str, worker: str) -> int | None:
    pid = os.getpid()
    fd = _supervisor.get(pid)
    if fd is not None:
        return fd
    _supervisor.clear()  # a fork of a pool process: its parent's supervisor is not ours
    read_fd, write_fd = os.pipe()
    code_r, code_w = os.pipe()
    env = {**os.environ, SUPERVISE_VAR: json.dumps({"backend": backend, "worker": worker})}
    try:
        child = os.fork()
    except OSError:
        for fd in (read_fd, write_fd, code_r, code_w):
            os.close(fd)
        return None
    if child == 0:
        try:
            # Its own session: `kill -9 -WORKERPGID` leaves it running. Nothing of the
            # pool process's is kept (its broker and Redis sockets, its pipes): a
            # connection held here would outlive the pool process.
            with contextlib.suppress(OSError):
                os.setsid()
            os.dup2(code_r, 0)
            os.dup2(read_fd, SUPERVISE_FD)
            os.set_inheritable(SUPERVISE_FD, True)
            os.closerange(SUPERVISE_FD + 1, 1 << 16)
            os.execve(sys.executable, [sys.executable, "-"], env)
        finally:
            os._exit(0)
    os.close(read_fd)
    os.close(code_r)
    with contextlib.suppress(OSError):
        os.write(code_w, SUPERVISE_CODE)
    os.close(code_w)
    os.set_blocking(write_fd, False)  # a stalled supervisor must never stall a step
    _supervisor[pid] = write_fd
    return write_fd


class Attempt:
    """One claimed attempt in the pool process: heartbeat, cancel watch, supervisor."""

    def __init__(self, redis_client: Any, task_id: str, meta: dict[str, Any], worker: str,
                 kill_grace: float) -> None:
        self.r = redis_client
        self.task_id = task_id
        self.meta = meta
        self.worker = worker
        self.lost_after = float(meta.get("lost_after") or 10.0)
        self.kill_grace = kill_grace
        self.every = min(1.0, self.lost_after / 4)
        # The claim set the first beat; a cancel request comes only after a claim (before
        # it, a runner settles the attempt instead) and is seen at the next beat.
        self.next_beat = time.monotonic() + self.every
        self.last_ok = time.monotonic()  # the last heartbeat written (the claim's)
        self.sup_fd: int | None = None

    def _tell(self, line: bytes) -> None:
        if self.sup_fd is not None:
            with contextlib.suppress(OSError):
                os.write(self.sup_fd, line)

    def beat(self, pgid: int | None) -> bool:
        """Called about every second (and at the start); True: stop the attempt."""
        if pgid is not None and self.sup_fd is None:
            # This worker's own result backend: the runner's URL (a password in it) is
            # not sent through the broker.
            self.sup_fd = _supervisor_fd(str(_backend), self.worker)
            # Stop within half the time the runner waits: the attempt is over before the
            # runner starts another one. The supervisor is told only of heartbeats that
            # reached Redis: a worker cut off from Redis stops its step after lost_after/2
            # (the runner waits lost_after), however the pool process fares.
            self._tell(b"w " + json.dumps({
                "pgid": pgid, "task": self.task_id, "client": self.meta["client"],
                "limit": max(1.0, self.lost_after / 2),
                "grace": min(self.kill_grace, self.lost_after / 4)}).encode() + b"\n")
        now = time.monotonic()
        if now < self.next_beat:
            return False
        self.next_beat = now + self.every
        if now - self.last_ok >= self.lost_after:
            # Thawed, or Redis away for that long: the runner may have declared the
            # attempt lost and started another; stop before anything else, at once (no
            # grace: another attempt may be running).
            if pgid is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pgid, signal.SIGKILL)
            return True
        try:
            pipe = self.r.pipeline(transaction=False)
            # The cancel key first: a thawed worker must not refresh a beat that a resume
            # or a retry already gave up.
            pipe.exists(task_key("cancel", self.task_id))
            pipe.set(task_key("beat", self.task_id), "1", px=int(self.lost_after * 1000))
            cancel, _ = pipe.execute()
        except Exception:
            return False  # no tick: the supervisor stops the step after lost_after/2
        self.last_ok = time.monotonic()
        self._tell(b".")
        return bool(cancel)

    def finish(self, result: dict[str, Any]) -> None:
        self._tell(b"d\n")
        client = events_key(str(self.meta["client"]))
        # Redis away for a moment (a restart): the end is kept and sent again until it
        # answers, as long as the runner waits for a result backend that is away
        # (executor.away_limit); the runner finds no heartbeat only a second after that.
        deadline = time.monotonic() + max(15.0, 2 * self.lost_after)
        while True:
            try:
                pipe = self.r.pipeline()  # MULTI: the beat ends when the result is there
                pipe.delete(task_key("beat", self.task_id))
                pipe.rpush(client, json.dumps({"e": "end", "t": self.task_id, **result}))
                pipe.expire(client, 86400)
                pipe.execute()
                return
            except Exception:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.2)


def _quiet_results() -> None:
    """Log a task's end without its result: celery's line carries the return value, and
    an output named like a secret becomes secret only once written, too late for the
    worker to mask it (SECRET-1)."""
    from celery.app import trace

    trace.LOG_SUCCESS = "Task %(name)s[%(id)s] succeeded in %(runtime)ss"


_quiet_results()
_broker, _backend, _queue = settings()
app = make_app(_broker, _backend, _queue, transport_options=env_transport_options())
_clients: dict[int, Any] = {}


def _client() -> Any:
    """This process's Redis connection to the result backend: one per pool process (a
    connection inherited through fork is shared with the parent, so never reused)."""
    pid = os.getpid()
    if pid not in _clients:
        import redis

        _clients.clear()
        _clients[pid] = redis.Redis.from_url(str(_backend), socket_timeout=10,
                                             socket_connect_timeout=5,
                                             health_check_interval=30)
    return _clients[pid]


@app.task(name=TASK_NAME, bind=True)  # type: ignore[untyped-decorator]
def run_step(self: Any, request: dict[str, Any], secrets: list[str] | None = None,
             meta: dict[str, Any] | None = None) -> Any:
    import logging

    worker = self.request.hostname or os.uname().nodename
    if not meta:  # sent by an older flowsh: no protocol to follow
        return run_request(request, list(secrets or []), worker)
    task_id = str(self.request.id)
    r = _client()
    started = time.time()
    claim = r.eval(
        CLAIM, 5, want_key(meta["run_id"], meta["key"]), run_key(meta["run_id"]),
        task_key("claim", task_id), task_key("beat", task_id), events_key(meta["client"]),
        task_id, json.dumps({"worker": worker, "pid": os.getpid(), "at": started,
                             "client": meta["client"]}),
        int(float(meta.get("lost_after") or 10.0) * 1000),
        json.dumps({"e": "start", "t": task_id, "worker": worker, "pid": os.getpid(),
                    "at": started}))
    claim = claim.decode() if isinstance(claim, bytes) else str(claim)
    if claim != "ok":
        why = {"stale": "its attempt was given up (queue timeout, cancel or resume)",
               "norun": "its run is no longer live", "dup": "it was delivered twice"}
        logging.getLogger("flowsh_celery").warning(
            "flowsh: not running task %s (step %s of run %s): %s", task_id, meta.get("key"),
            meta.get("run_id"), why.get(claim, claim))
        return {"refused": claim}
    env = {**(request.get("env") or {}), TAG_VAR: task_id}
    attempt = Attempt(r, task_id, meta, worker, float(request.get("kill_grace") or 5.0))
    try:
        result = run_request({**request, "env": env}, list(secrets or []), worker,
                             beat=attempt.beat)
    except Exception as exc:  # report it rather than leave the runner to time out
        result = _result(worker, 1, f"flowsh-celery worker error: {type(exc).__name__}: {exc}")
    attempt.finish(result)
    return {"exit_code": result["exit_code"]}


# -- telling runners which workers report here ---------------------------------------------


_advert_stop: list[Any] = []  # the advertising loop's stop event, and its name


def _advertise(consumer: Any) -> None:
    import threading

    name = consumer.hostname
    queues = sorted(q.name for q in consumer.app.amqp.queues.consume_from.values()) \
        if consumer.app.amqp.queues.consume_from else [_queue]
    from kombu.utils.url import maybe_sanitize_url

    # "consumer": this worker also says so in its own broker (a Redis one), where a runner
    # that publishes to another broker (a typo in one URL) does not find it.
    entry = json.dumps({"queues": queues, "pid": os.getpid(), "host": os.uname().nodename,
                        "broker": str(maybe_sanitize_url(_broker)),
                        "consumer": _broker_is_redis(), "name": name})
    stop = threading.Event()
    _advert_stop[:] = [stop, name]

    def loop() -> None:
        import redis

        r = redis.Redis.from_url(str(_backend), socket_timeout=5, socket_connect_timeout=5)
        rb = redis.Redis.from_url(str(_broker), socket_timeout=5, socket_connect_timeout=5) \
            if _broker_is_redis() else None
        while not stop.is_set():
            with contextlib.suppress(Exception):
                pipe = r.pipeline(transaction=False)
                pipe.set(f"{PREFIX}worker:{name}", entry, ex=ADVERT_TTL)
                pipe.sadd(f"{PREFIX}workers", name)
                pipe.execute()
            if rb is not None:
                with contextlib.suppress(Exception):
                    pipe = rb.pipeline(transaction=False)
                    pipe.set(f"{PREFIX}consumer:{name}", entry, ex=ADVERT_TTL)
                    pipe.sadd(f"{PREFIX}consumers", name)
                    pipe.execute()
            stop.wait(ADVERT_EVERY)

    threading.Thread(target=loop, name="flowsh-advertise", daemon=True).start()


def _broker_is_redis() -> bool:
    return str(_broker).startswith(("redis://", "rediss://", "unix://"))


def _withdraw() -> None:
    """A worker shutting down (warm or cold) takes no new task: runners must not count it
    as serving its queues for the advert's remaining ADVERT_TTL."""
    if not _advert_stop:
        return
    stop, name = _advert_stop
    stop.set()
    import redis

    with contextlib.suppress(Exception):
        r = redis.Redis.from_url(str(_backend), socket_timeout=2, socket_connect_timeout=2)
        r.delete(f"{PREFIX}worker:{name}")
        r.srem(f"{PREFIX}workers", name)
        r.close()
    if _broker_is_redis():
        with contextlib.suppress(Exception):
            rb = redis.Redis.from_url(str(_broker), socket_timeout=2, socket_connect_timeout=2)
            rb.delete(f"{PREFIX}consumer:{name}")
            rb.srem(f"{PREFIX}consumers", name)
            rb.close()


def _connect_signals() -> None:
    from celery.signals import worker_ready, worker_shutting_down

    @worker_ready.connect(weak=False)  # type: ignore[untyped-decorator]
    def _ready(sender: Any = None, **_: Any) -> None:
        if sender is not None:
            _advertise(sender)

    @worker_shutting_down.connect(weak=False)  # type: ignore[untyped-decorator]
    def _shutting_down(**_: Any) -> None:
        _withdraw()


_connect_signals()
