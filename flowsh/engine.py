"""The run loop: ready steps -> executor, retries, timeouts, failure handling, events.

A ready-set scheduler. Each pass starts every step whose dependencies are satisfied, up to
the concurrency limit, then waits on the executor for the next outcome, retry wake-up or
signal. Every transition is written to the state backend before anything that depends on
it starts, then announced to plugins.
"""

from __future__ import annotations

import heapq
import os
import shlex
import signal
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowsh import placed, plugins
from flowsh.errors import LockHeldError, UsageError
from flowsh.events import DRAIN_LIMIT, Dispatcher, RunContext
from flowsh.executor import Executor, Outcome, StepRequest
from flowsh.graph import Graph
from flowsh.lock import WorkflowLock, hold_runner_lock, workflow_lock
from flowsh.model import SECRET_NAME, Step, Workflow
from flowsh.outputs import OutputError, parse_outputs, read_outputs
from flowsh.paths import step_cwd
from flowsh.secrets import (
    MASK,
    Masker,
    drop_secret_outputs,
    load_secret_outputs,
    save_secret_outputs,
)
from flowsh.state import (
    CRASHED,
    FAILED,
    INTERRUPTED,
    PENDING,
    RETRYING,
    RUNNING,
    SKIPPED,
    STEP_RUNNING,
    SUCCEEDED,
    RunRecord,
    StateBackend,
    StepRecord,
    ensure_private_dir,
    flowsh_home,
)
from flowsh.steps import base_environment, build_argv, library_files, retry_delay

HEARTBEAT_EVERY = 10.0
# The executor key of a step's `if:` test; a step name never holds a colon (model.STEP_NAME).
IF_KEY = "if:"


class Reporter:
    """What a person (or a machine) sees of a run. The base class shows nothing."""

    wants_output = False
    prefix = False  # prefix output lines with the step name (set by the engine)

    def run_started(self, run: RunRecord, wf: Workflow) -> None: ...
    def step_started(self, run: RunRecord, step: StepRecord) -> None: ...
    def step_output(self, step: str, line: str) -> None: ...
    def step_retrying(self, run: RunRecord, step: StepRecord, delay: float) -> None: ...
    def step_finished(self, run: RunRecord, step: StepRecord) -> None: ...
    def run_finished(self, run: RunRecord) -> None: ...


@dataclass
class RunOptions:
    params: dict[str, str] = field(default_factory=dict)
    concurrency: int | None = None
    state_url: str | None = None
    backend: StateBackend | None = None  # an open backend wins over state_url
    reporter: Reporter | None = None
    executor: str | None = None  # default: the workflow's `executor`
    overlap: str | None = None
    lock_timeout: float | None = None
    # Resume: continue this run. Without `only`, every step that did not succeed runs
    # again; with `only` (flowsh retry), exactly those steps run again, whatever they were.
    resume: RunRecord | None = None
    only: set[str] | None = None
    run_id: str | None = None
    plugin_options: dict[str, Any] = field(default_factory=dict)  # RunContext.options


def new_run_id() -> str:
    # os.urandom, not `random`: tests (hypothesis) seed the global generator. 32 bits: a
    # wrapper started hundreds of times a second must not meet itself.
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"-{os.urandom(4).hex()}"


def definition_hash(wf: Workflow) -> str:
    import hashlib

    data = wf.model_dump_json(exclude={"path"}, by_alias=True)
    return hashlib.sha256(data.encode()).hexdigest()[:16]


class _Interrupt:
    """Turns SIGINT/SIGTERM into a flag plus a wake-up of the executor's wait."""

    def __init__(self, executor: Executor) -> None:
        self.signum: int | None = None
        self.executor = executor
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, _frame: object) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop waiting for the grace period
        self.signum = signum
        self.executor.wake()

    def __enter__(self) -> _Interrupt:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: the caller handles signals
                break
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


class Engine:
    def __init__(
        self, wf: Workflow, options: RunOptions, backend: StateBackend,
        lock: WorkflowLock | None = None,
    ) -> None:
        self.wf = wf
        self.lock = lock
        self.opt = options
        self.backend = backend
        self.reporter = options.reporter or Reporter()
        self.graph = Graph.build(wf)
        self.steps = {s.name: s for s in wf.steps}
        self.concurrency = options.concurrency or wf.concurrency
        self.failed = False  # a failure that stops new (non-`always`) steps
        self.waiting: list[tuple[float, str]] = []  # (wake time, step) for retries
        self.running: set[str] = set()
        # Steps to look at in the next `_start_ready`, as a heap by position in graph.order.
        self.rank = {name: i for i, name in enumerate(self.graph.order)}
        self.candidates: list[tuple[int, str]] = []
        self.queued: set[str] = set()
        self.exports: dict[str, dict[str, str]] = {}  # env each step passes downstream
        self.last_beat = 0.0
        self.library: dict[str, Any] = {}  # libstate key -> LibraryState
        # Steps whose `if:` test runs: the environment and workdir their attempt starts with.
        self.pending_launch: dict[str, tuple[dict[str, str], Path]] = {}
        self.reporter.prefix = self.concurrency > 1 and not self._is_chain()
        # Resolved before the run is recorded, so a typo never leaves a dangling run.
        name = options.executor or wf.executor
        executors = plugins.registry("executors")
        if name not in executors:
            known = ", ".join(sorted(executors))
            raise UsageError(f"unknown executor {name!r} (known: {known}; a plugin may add it)")
        self.executor_factory = executors[name]

    def _is_chain(self) -> bool:
        """No two steps can ever run at once (every level of the graph holds one step)."""
        return all(len(level) == 1 for level in self.graph.levels())

    # -- set-up -----------------------------------------------------------------------

    def _environment(self) -> None:
        """Params, the steps' base environment and the secret mask, before anything runs."""
        wf, opt = self.wf, self.opt
        prior = opt.resume
        params = {**wf.params, **(prior.params if prior else {}), **opt.params}
        for k, v in list(params.items()):
            if v != MASK or k in opt.params:
                continue
            # The record keeps no secret: it must come again, from the command line or
            # (said out loud) from the workflow file.
            if k not in wf.params or wf.params[k] == MASK:
                raise UsageError(f"run {prior.run_id if prior else ''} was started with secret "
                                 f"parameter {k}, which the state does not keep: pass {k}=... "
                                 "again to resume it")
            params[k] = wf.params[k]
            plugins.warn(f"secret parameter {k} is not kept in the state: resuming with the "
                         f"workflow file's value (pass {k}=... to use another)")
        missing = [k for k in wf.required_params if k not in params]
        if missing:
            raise UsageError(f"parameter {', '.join(missing)} needs a value (declared without "
                             f"a default): pass {missing[0]}=VALUE")
        self.params = params
        self.env = base_environment(wf, params)
        # What flowsh sets on purpose, which a sourced library must not override.
        self.explicit = {k for k, v in self.env.items() if os.environ.get(k) != v} | \
            set(params) | set(wf.env)
        self.secret_names = wf.secret_names()
        # Everything a step sees: the file's env and params, env_file, and flowsh's own
        # environment (an AWS_SECRET_ACCESS_KEY exported by cron's caller is a secret too).
        self.mask = Masker.for_env(self.env, self.secret_names)
        # A step's own secret-named env (`env: {DB_PASSWORD: ...}` on one step) too.
        self.mask.add(v for s in wf.steps for k, v in s.env.items() if self._secret(k))

    def _prepare(self, run_id: str) -> RunRecord:
        wf, opt = self.wf, self.opt
        prior = opt.resume
        masked_params = self.mask.mapping(self.params, self.secret_names)
        if prior is not None:
            self._stop_orphans(prior)
            run = prior
            run.status = RUNNING
            run.pid, run.host = os.getpid(), socket.gethostname()
            run.ended_at = run.exit_code = None
            run.params = masked_params
            run.definition_hash = definition_hash(wf)
            run.step_names = [s.name for s in wf.steps]
            for name in self.graph.names:
                rec = run.steps.get(name)
                # `always` steps are the run's `finally`: they close each attempt of it.
                again = (name in opt.only) if opt.only is not None else (
                    rec is None or rec.status != SUCCEEDED or self.steps[name].always)
                if rec is None or again:
                    run.steps[name] = StepRecord(
                        name=name, attempts=rec.attempts if rec else 0,
                        log_path=rec.log_path if rec else None)
            for name in [n for n in run.steps if n not in self.steps]:
                del run.steps[name]
            self.backend.update_run(run)
            for rec in run.steps.values():
                if rec.status == PENDING:
                    self.backend.save_step(run, rec)
        else:
            self._stop_crashed_runs()
            run = RunRecord(
                run_id=run_id,
                workflow=wf.identity,
                file=wf.path,
                definition_hash=definition_hash(wf),
                params=masked_params,
                pid=os.getpid(),
                host=socket.gethostname(),
                started_at=time.time(),
                steps={s.name: StepRecord(name=s.name) for s in wf.steps},
                step_names=[s.name for s in wf.steps],
            )
            self.backend.create_run(run)
        return run

    def _stop_crashed_runs(self) -> None:
        """A new run of this identity must not overlap what a runner killed with -9 left
        running (the lock died with it): such runs are marked crashed and their steps
        stopped first, as a resume would (flowsh wrap from cron is always a new run)."""
        from flowsh.store import check_liveness

        # Crashed ones too: `--resume` may have marked the run crashed, then chosen to start
        # afresh (a cron tick whose file lost a step), with the dead runner's steps running.
        for old in self.backend.list_runs(self.wf.identity, limit=5,
                                          statuses=frozenset({RUNNING, CRASHED})):
            run = check_liveness(self.backend, old)
            if run.status != RUNNING:
                if not run.steps:
                    run = self.backend.load_run(run.run_id)
                self._stop_orphans(run, new_run=True)

    def _stop_orphans(self, prior: RunRecord, *, new_run: bool = False) -> None:
        """Steps a crashed runner left running would run twice alongside their re-run."""
        for line in placed.stop_remote(self.executor, prior, self.wf.kill_grace):
            plugins.warn(line)
        if prior.host != socket.gethostname():
            return
        from flowsh.process import stop_leftovers, stop_orphan

        for rec in prior.steps.values():
            if rec.pid and stop_orphan(rec.pid, prior.run_id, self.wf.kill_grace):
                again = "starting a new run" if new_run else "running it again"
                plugins.warn(f"step {rec.name!r} of crashed run {prior.run_id} was still "
                             f"running (pid {rec.pid}); stopped it before {again}")
            rec.pid = None
        if prior.status not in (RUNNING, CRASHED):
            return  # it ended properly: what is left was kept on purpose (keep_children)
        left = stop_leftovers(prior.run_id, self.wf.kill_grace)
        if left:
            plugins.warn(f"crashed run {prior.run_id} had {len(left)} process(es) it had not "
                         f"recorded still running (pid {', '.join(map(str, sorted(left)))}); "
                         "stopped them")

    # -- the loop ---------------------------------------------------------------------

    def execute(self) -> RunRecord:
        self._environment()
        # The executor exists before the run is recorded: one that cannot start (a broker
        # that is down) is an error with nothing left behind.
        on_output = self.reporter.step_output if self.reporter.wants_output else None
        self.executor = self.executor_factory(
            on_output=on_output, mask=self.mask, **self.wf.executor_options)
        try:
            return self._execute_locked()
        finally:
            self.executor.close()

    def _execute_locked(self) -> RunRecord:
        run_id = self.opt.resume.run_id if self.opt.resume else (self.opt.run_id or new_run_id())
        # The liveness lock is taken before the run is recorded, so a `running` record
        # without a held lock always means a dead runner (store.check_liveness).
        self.run_dir = ensure_private_dir(flowsh_home() / "runs" / run_id)
        held = hold_runner_lock(self.run_dir)
        if held is None:
            raise LockHeldError(f"run {run_id} is being run by another flowsh process right "
                                "now (overlap: allow, or a resume of a run still going)")
        runner_fd = held
        if self.opt.resume is not None:
            # What we were asked to resume was read before the locks were ours: another
            # runner may have run (or finished) it meanwhile. Read it again.
            fresh = self.backend.load_run(run_id)
            if fresh.status == SUCCEEDED and self.opt.only is None:
                os.close(runner_fd)
                plugins.warn(f"run {run_id} was finished by another runner meanwhile; "
                             "starting a new run")
                self.opt.resume = None
                mask = self.mask  # the executor holds this one
                self._environment()
                mask.add(self.mask.values)
                self.mask = mask
                return self._execute_locked()
            self.opt.resume = fresh
        if self.lock is not None:
            self.lock.note(run_id)
        try:
            self._library_states(run_id)
        except BaseException:
            os.close(runner_fd)
            if self.opt.resume is None:  # nothing was recorded: leave nothing behind
                import shutil

                shutil.rmtree(self.run_dir, ignore_errors=True)
            raise
        try:
            run = self._prepare(run_id)
            self.run = run
            self.events = Dispatcher(RunContext(
                run=run, workflow=self.wf, masker=self.mask, run_dir=self.run_dir,
                options=dict(self.opt.plugin_options)))
            drain = DRAIN_LIMIT
            try:
                self._execute(run)
            except KeyboardInterrupt:
                drain = 2.0  # a second Ctrl-C: the user wants out now
                raise
            finally:
                self.events.close(drain)
        finally:
            os.close(runner_fd)  # after the final state is written: see store.check_liveness
        return run

    def _library_states(self, run_id: str) -> None:
        """Top-level assignments of sourced libraries: evaluated once per run (a resume
        reads the recorded ones back), before the first step (flowsh.libstate)."""
        from flowsh.libstate import run_states

        env = {**self.env, "FLOWSH_RUN_ID": run_id, "FLOWSH_WORKFLOW": self.wf.name}
        self.library = run_states(self.wf, self.run_dir, env,
                                  reuse=self.opt.resume is not None)
        for state in self.library.values():
            self.mask.add(v for k, v in state.values.items() if v and self._secret(k))

    def _secret(self, name: str) -> bool:
        return name in self.secret_names or SECRET_NAME.search(name) is not None

    def _execute(self, run: RunRecord) -> None:
        executor = self.executor
        self.reporter.run_started(run, self.wf)
        self.events.emit("flowsh_run_started")
        # Steps that succeeded in an earlier attempt of this run pass their outputs on.
        for name in self.graph.order:
            if run.steps[name].status == SUCCEEDED:
                outputs = self._unmask_outputs(name, run.steps[name].outputs)
                masked = sorted(k for k, v in outputs.items() if v == MASK)
                if masked:
                    plugins.warn(f"step {name!r} output {', '.join(masked)} held a secret, which "
                                 f"the state does not keep; steps after it see {MASK!r} "
                                 f"(flowsh retry {run.run_id} --step {name} --downstream "
                                 "runs them again with the real value)")
                self._export(name, outputs)
        self._consider(self.graph.order)
        try:
            with _Interrupt(executor) as intr:
                self._loop(intr)
        except BaseException as exc:
            executor.cancel_all()
            if isinstance(exc, KeyboardInterrupt):
                # A second Ctrl-C: no grace period. Record what was running; closing the
                # executor (in `execute`) kills their process groups.
                for key in sorted(self.running):
                    rec = self.run.steps[key.removeprefix(IF_KEY)]
                    rec.status, rec.message = INTERRUPTED, "killed (second interrupt)"
                    rec.ended_at = time.time()
                    self._record_finished(rec)
                self.running.clear()
            else:
                self._drain_interrupted()
            self._finish_run(INTERRUPTED, 130)
            raise
        if intr.signum is not None:
            self._finish_run(INTERRUPTED, 130)
            return
        # A step interrupted while flowsh was not (a task revoked on a remote worker) is a
        # failure of the run like any other.
        failed = any(
            (r.status == FAILED and not self.steps[n].continue_on_failure)
            or r.status == INTERRUPTED
            for n, r in run.steps.items()
        )
        self._finish_run(FAILED if failed else SUCCEEDED, 1 if failed else 0)

    def _unmask_outputs(self, name: str, outputs: dict[str, str]) -> dict[str, str]:
        """A resumed step's secret outputs, from the run's private directory (the store
        keeps only the mask)."""
        kept = load_secret_outputs(self.run_dir, name)
        real = {k: kept[k] for k, v in outputs.items() if v == MASK and k in kept}
        self.mask.add(real.values())
        return {**outputs, **real}

    def _loop(self, intr: _Interrupt) -> None:
        while True:
            if intr.signum is not None:
                self.executor.cancel_all()
                self._drain_interrupted()
                return
            self._wake_retries()
            self._start_ready()
            if not self.running and not self.waiting:
                return
            timeout = None
            if self.waiting:
                timeout = max(0.0, self.waiting[0][0] - time.time())
            if self.running:
                timeout = HEARTBEAT_EVERY if timeout is None else min(timeout, HEARTBEAT_EVERY)
                for key, outcome in self.executor.wait(timeout):
                    self._on_outcome(key, outcome)
                for rec in placed.apply(self.executor, self.run.steps):
                    self.backend.save_step(self.run, rec)
            elif timeout:
                # In slices: a long retry backoff must not starve the heartbeat that tells
                # other hosts this runner lives (store.check_liveness, STALE_AFTER).
                self._sleep(min(timeout, HEARTBEAT_EVERY), intr)
            self._beat()

    def _sleep(self, seconds: float, intr: _Interrupt) -> None:
        end = time.time() + seconds
        while intr.signum is None and time.time() < end:
            self.executor.wait(min(0.5, end - time.time()))

    def _beat(self) -> None:
        now = time.time()
        if now - self.last_beat >= HEARTBEAT_EVERY:
            self.last_beat = now
            self.run.heartbeat = now
            self.backend.heartbeat(self.run)

    def _drain_interrupted(self) -> None:
        while self.executor.running():
            for key, outcome in self.executor.wait(1.0):
                outcome.interrupted = True
                self._on_outcome(key, outcome)
        for _, name in self.waiting:
            rec = self.run.steps[name]
            rec.status, rec.message = INTERRUPTED, "interrupted while waiting to retry"
            rec.ended_at = time.time()
            self._record_finished(rec)
        self.waiting.clear()

    def _deps_state(self, name: str) -> str:
        """'ready', 'wait', or 'blocked' (a dependency failed or was skipped by a failure)."""
        state = "ready"
        for dep in self.graph.needs[name]:
            rec = self.run.steps[dep]
            if rec.status == SUCCEEDED:
                continue
            if rec.status == FAILED and self.steps[dep].continue_on_failure:
                continue
            if rec.status == SKIPPED and rec.message == "condition false":
                continue
            if rec.status in (FAILED, SKIPPED, INTERRUPTED):
                state = "blocked"
                continue
            return "wait"
        return state

    def _consider(self, names: list[str]) -> None:
        """Queue steps whose dependencies changed, to be looked at by `_start_ready`."""
        for name in names:
            if name not in self.queued:
                self.queued.add(name)
                heapq.heappush(self.candidates, (self.rank[name], name))

    def _start_ready(self) -> None:
        """Start (or skip) what can go, in graph order, up to the concurrency limit.

        Only candidates are looked at: a step whose dependencies changed since it was last
        found waiting. Scanning every step at every event made a chain of N steps cost
        O(N^2) (5 ms per step at N=2000). A step found waiting drops out of the queue; the
        end of one of its dependencies (`_record_finished`) or a retry wake-up brings it
        back. Whether a step may go depends only on its dependencies' states, the
        concurrency limit (a startable step stays queued) and `self.failed`, which only
        ever turns true and matters only once a step's dependencies are all final.
        """
        heap = self.candidates
        while heap:
            name = heap[0][1]
            rec = self.run.steps[name]
            if rec.status == PENDING:
                step = self.steps[name]
                deps = self._deps_state(name)
                if deps == "wait":
                    pass
                elif step.always:
                    if deps != "blocked" or self._all_deps_final(name):
                        if len(self.running) >= self.concurrency:
                            return
                        self._pop_candidate()
                        self._start(step, rec)
                        continue
                elif deps == "blocked" or (self.failed and rec.attempts == 0):
                    # A step already attempted keeps its retries after another step
                    # failed (a started step finishes, as in the exported script).
                    if not (self.failed and deps != "blocked"
                            and not self._all_deps_final(name)):
                        self._pop_candidate()
                        self._skip(rec, "upstream failed" if deps == "blocked" else "run failed")
                        continue
                else:
                    if len(self.running) >= self.concurrency:
                        return
                    self._pop_candidate()
                    self._start(step, rec)
                    continue
            self._pop_candidate()

    def _pop_candidate(self) -> None:
        _, name = heapq.heappop(self.candidates)
        self.queued.discard(name)

    def _all_deps_final(self, name: str) -> bool:
        return all(
            self.run.steps[d].status in (SUCCEEDED, FAILED, SKIPPED, INTERRUPTED)
            for d in self.graph.needs[name]
        )

    def _skip(self, rec: StepRecord, why: str) -> None:
        rec.status, rec.message = SKIPPED, why
        self._record_finished(rec)

    def _step_env(self, step: Step, rec: StepRecord, attempt: int) -> dict[str, str]:
        env = dict(self.env)
        for dep in self.graph.needs[step.name]:
            env.update(self.exports.get(dep, {}))
        env.update(step.env)
        files = library_files(self.wf, step)
        if files:
            from flowsh.libstate import key

            env["FLOWSH_LIBRARY_STATE"] = self.library[key(files)].text
        out_path = self.run_dir / f"{step.name}.out"
        env.update(
            FLOWSH_RUN_ID=self.run.run_id,
            FLOWSH_WORKFLOW=self.wf.name,
            FLOWSH_STEP=step.name,
            FLOWSH_ATTEMPT=str(attempt),
            FLOWSH_OUTPUT=str(out_path),
        )
        return env

    def _start(self, step: Step, rec: StepRecord) -> None:
        # The attempt counts once the step starts (or its `if:` test fails); the test sees
        # the number of the attempt it decides on (IF-4).
        env = self._step_env(step, rec, rec.attempts + 1)
        cwd = step_cwd(self.wf, step)
        if step.if_ is not None:
            self._start_condition(step, rec, env, cwd)
            return
        rec.attempts += 1
        self._launch(step, rec, env, cwd)

    def _launch(self, step: Step, rec: StepRecord, env: dict[str, str], cwd: Path) -> None:
        log_path = self.run_dir / f"{step.name}.log"
        if rec.attempts > 1 or self.opt.resume is not None:
            # A fresh run directory has no outputs file; the step's `>>` creates it there
            # (in the 0700 run directory), which saves a file creation per step.
            Path(env["FLOWSH_OUTPUT"]).unlink(missing_ok=True)
        rec.status, rec.started_at, rec.ended_at = STEP_RUNNING, time.time(), None
        rec.exit_code = rec.signal = None
        rec.message, rec.log_path = None, str(log_path)
        if rec.attempts > 1:
            _append_log(log_path, f"--- flowsh: attempt {rec.attempts} ---\n")
        self.running.add(step.name)
        rec.pid = self.executor.start(StepRequest(
            key=step.name,
            argv=build_argv(self.wf, step, self._explicit_for(step)),
            cwd=str(cwd),
            env=env,
            log_path=str(log_path),
            timeout=step.timeout,
            kill_grace=self.wf.kill_grace,
            keep_children=step.keep_children,
            queue=step.queue,
            queue_timeout=step.queue_timeout or self.wf.queue_timeout,
            run_id=self.run.run_id,
        ))
        rec.task_id = rec.queue = rec.worker = rec.queued_at = None
        placed.apply(self.executor, self.run.steps)
        # Recorded once started, with its pid: a crash before this line leaves the step
        # `pending` (run again on resume); after it, resume can stop the orphan first.
        self.backend.save_step(self.run, rec)
        self.reporter.step_started(self.run, rec)
        self.events.emit("flowsh_step_started", step=rec)

    def _explicit_for(self, step: Step) -> set[str]:
        if not (self.wf.source or step.source):
            return set()
        names = self.explicit | set(step.env)
        for dep in self.graph.needs[step.name]:
            names |= set(self.exports.get(dep, {}))
        return names

    # -- `if:` tests ------------------------------------------------------------------
    # A test is a job of the executor like a step (semantics.md IF-5): it takes a
    # concurrency slot, has the step's environment (FLOWSH_ATTEMPT of the coming attempt)
    # and timeout, its leftovers are stopped, an interrupt stops it, and its pid is
    # recorded so that a resume after a crash stops it before anything runs again.

    def _condition_log(self, name: str) -> Path:
        # `@` is in no step name: `a`'s test never meets the log of a step named `a.if`.
        return self.run_dir / f"{name}@if.log"

    def _start_condition(self, step: Step, rec: StepRecord, env: dict[str, str],
                         cwd: Path) -> None:
        out = self._condition_log(step.name)
        out.unlink(missing_ok=True)
        key = IF_KEY + step.name
        self.running.add(key)
        self.pending_launch[step.name] = (env, cwd)
        shell = shlex.split(step.shell or self.wf.shell)
        rec.pid = self.executor.start(StepRequest(
            key=key,
            argv=[*shell, "-c", step.if_ or "true"],
            cwd=str(cwd),
            # What a test writes to $FLOWSH_OUTPUT is no output of the step (IF-2: its
            # stdout goes nowhere, its stderr to the log).
            env={**env, "FLOWSH_OUTPUT": os.devnull},
            log_path=str(out),
            timeout=step.timeout,
            kill_grace=self.wf.kill_grace,
            echo=False,
            discard_stdout=True,
            queue=step.queue,
            queue_timeout=step.queue_timeout or self.wf.queue_timeout,
            run_id=self.run.run_id,
        ))
        if rec.pid is not None:
            self.backend.save_step(self.run, rec)  # still pending; the pid is for a resume

    def _on_condition(self, name: str, outcome: Outcome) -> None:
        self.running.discard(IF_KEY + name)
        step, rec = self.steps[name], self.run.steps[name]
        env, cwd = self.pending_launch.pop(name)
        rec.pid = None
        out = self._condition_log(name)
        try:
            with out.open("rb") as fh:  # masked as written, by the executor
                fh.seek(max(0, out.stat().st_size - 16384))
                err = fh.read().decode(errors="replace")
        except OSError:
            err = ""
        out.unlink(missing_ok=True)
        if outcome.interrupted:  # the step itself never started: no attempt counted
            rec.status, rec.message = INTERRUPTED, "interrupted during its `if` test"
            rec.ended_at = time.time()
            self.failed = True
            self._record_finished(rec)
        elif outcome.ok:
            rec.attempts += 1
            self._launch(step, rec, env, cwd)
        elif outcome.exit_code == 1 and not outcome.signal and not outcome.error:
            self._skip(rec, "condition false")
        else:
            rec.attempts += 1  # a broken test fails the step: that attempt counts
            code = None if outcome.signal or outcome.error else outcome.exit_code
            self._condition_failed(step, rec, self.run_dir / f"{name}.log", code,
                                   outcome.signal, err or (outcome.error or ""),
                                   "timed out" if outcome.timed_out else None)

    def _condition_failed(self, step: Step, rec: StepRecord, log_path: Path,
                          code: int | None, sig: int | None, err: str,
                          how: str | None = None) -> None:
        """An `if:` test that errored (2 from `[`, 127, a signal, its timeout) fails the step."""
        now = time.time()
        rec.started_at = rec.ended_at = now
        rec.exit_code, rec.signal, rec.log_path = code, sig, str(log_path)
        how = how or (f"exit {code}" if code is not None else (
            f"signal {signal.Signals(sig).name}" if sig else "error"))
        detail = " ".join(err.strip().splitlines()[-1:]) or "(no message)"
        rec.message = f"the `if` test failed ({how}): {detail}"
        _append_log(log_path, f"flowsh: `if: {step.if_}` failed ({how})\n{err}")
        rec.status = FAILED
        if not step.continue_on_failure:
            self.failed = True
        self._record_finished(rec)

    def _on_outcome(self, name: str, outcome: Outcome) -> None:
        if name.startswith(IF_KEY):
            self._on_condition(name[len(IF_KEY):], outcome)
            return
        self.running.discard(name)
        step, rec = self.steps[name], self.run.steps[name]
        rec.exit_code, rec.signal, rec.pid = outcome.exit_code, outcome.signal, None
        rec.ended_at = outcome.ended_at
        placed.record(rec, outcome.placement)
        bad, outputs = None, {}
        out_file = self.run_dir / f"{name}.out"
        if outcome.ok:
            try:
                outputs = read_outputs(out_file) if outcome.outputs is None else \
                    parse_outputs(outcome.outputs.encode())
            except OutputError as exc:
                bad = self.mask(str(exc))
        # Read once, kept in the store (secret values only in the 0600 secret-outputs
        # file, dropped when the run succeeds): the step's own file would keep them in clear.
        out_file.unlink(missing_ok=True)
        if outcome.ok and bad is None:
            if outputs:
                # Secret-named outputs are masked from now on wherever they show up; the
                # record keeps them masked; steps downstream get the real values.
                secret = {k: v for k, v in outputs.items()
                          if k in self.secret_names or SECRET_NAME.search(k)}
                if secret:
                    self.mask.add(secret.values())
                    save_secret_outputs(self.run_dir, name, secret)
                    # The step may have printed them before they were known to be secret.
                    _remask_log(self.run_dir / f"{name}.log", self.mask)
            rec.outputs = self.mask.mapping(outputs, self.secret_names) if outputs else {}
            rec.status = SUCCEEDED
            rec.message = None
            self._export(name, outputs)
            self._record_finished(rec)
            return
        rec.message = bad or outcome.describe()
        if outcome.interrupted:
            rec.status = INTERRUPTED
            self.failed = True  # nothing new starts; `always` steps still run
            self._record_finished(rec)
            return
        if rec.attempts <= step.retry_count:
            delay = retry_delay(step, rec.attempts)
            rec.status = RETRYING
            self.backend.save_step(self.run, rec)
            self.reporter.step_retrying(self.run, rec, delay)
            self.events.emit("flowsh_step_retrying", step=rec, delay=delay)
            heapq.heappush(self.waiting, (time.time() + delay, name))
            return
        rec.status = FAILED
        if not step.continue_on_failure:
            self.failed = True
        self._record_finished(rec)

    def _export(self, name: str, outputs: dict[str, str]) -> None:
        """What `name` passes downstream: its dependencies' exports plus its own outputs."""
        needs = self.graph.needs[name]
        if len(needs) == 1 and not outputs:
            self.exports[name] = self.exports.get(needs[0], {})  # share, don't copy
            return
        merged: dict[str, str] = {}
        for dep in needs:
            merged.update(self.exports.get(dep, {}))
        merged.update(outputs)
        self.exports[name] = merged

    def _wake_retries(self) -> None:
        now = time.time()
        while self.waiting and self.waiting[0][0] <= now:
            _, name = heapq.heappop(self.waiting)
            self.run.steps[name].status = PENDING
            self._consider([name])

    def _record_finished(self, rec: StepRecord) -> None:
        if rec.name not in self.exports:
            # Failed or skipped: its own outputs are discarded (a failed step's file may
            # hold half of them); what it received from steps that succeeded passes on.
            self._export(rec.name, {})
        self._consider(self.graph.dependents[rec.name])
        self.backend.save_step(self.run, rec)
        self.reporter.step_finished(self.run, rec)
        self.events.emit("flowsh_step_finished", step=rec)

    def _finish_run(self, status: str, code: int) -> None:
        run = self.run
        if run.ended_at is not None and run.status == status:
            return
        for rec in run.steps.values():
            if rec.status in (PENDING, RETRYING):
                rec.status = SKIPPED if status != INTERRUPTED else INTERRUPTED
                rec.message = rec.message or ("run interrupted" if status == INTERRUPTED
                                              else "not reached")
                self.backend.save_step(run, rec)
        run.status, run.exit_code, run.ended_at = status, code, time.time()
        self.backend.update_run(run)
        if status == SUCCEEDED:  # nothing left to resume: the secrets go
            drop_secret_outputs(self.run_dir)
            if any(self._secret(k) for st in self.library.values() for k in st.values):
                # A later `flowsh retry` of this run evaluates the libraries again.
                from flowsh.libstate import STATE_FILE

                (self.run_dir / STATE_FILE).unlink(missing_ok=True)
        self.reporter.run_finished(run)
        self.events.emit("flowsh_run_finished")


def _remask_log(path: Path, mask: Masker) -> None:
    """Rewrite a step's log with the secrets known now masked (atomically: temp + rename)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        return
    text = data.decode("utf-8", "surrogateescape")
    masked = "\n".join(mask(line) for line in text.split("\n"))
    if masked == text:
        return
    tmp = path.with_name(path.name + ".mask")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(masked.encode("utf-8", "surrogateescape"))
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        plugins.warn(f"cannot mask the secret outputs in {path}: {exc.strerror or exc}")


def _append_log(path: Path, text: str) -> None:
    """flowsh's own line in a step's log; a log that cannot be written (a full disk) is a
    warning naming it, as for the step's output, never the end of the run."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)
    except OSError as exc:
        plugins.warn(f"cannot write log {path}: {exc.strerror or exc}")


@contextmanager
def _backend(options: RunOptions, wf_state: str | None) -> Iterator[StateBackend]:
    if options.backend is not None:
        yield options.backend
        return
    from flowsh.store import open_backend

    backend = open_backend(options.state_url or os.environ.get("FLOWSH_STATE") or wf_state)
    try:
        yield backend
    finally:
        backend.close()


def run_workflow(wf: Workflow, options: RunOptions | None = None) -> RunRecord:
    """Run (or resume) a workflow to the end and return its record.

    Holds the workflow's overlap lock for the whole run; raises LockHeldError when
    `overlap: skip` finds another run holding it.
    """
    options = options or RunOptions()
    overlap = options.overlap or wf.overlap
    timeout = options.lock_timeout if options.lock_timeout is not None else wf.lock_timeout
    with _backend(options, wf.state) as backend, \
            workflow_lock(wf.identity, overlap, timeout) as lock:
        return Engine(wf, options, backend, lock).execute()
