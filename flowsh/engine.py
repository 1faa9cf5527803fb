"""The run loop: ready steps -> executor, retries, timeouts, failure handling, events.

A ready-set scheduler. Each pass starts every step whose dependencies are satisfied, up to
the concurrency limit, then waits on the executor for the next outcome, retry wake-up or
signal. Every transition is written to the state backend before anything that depends on
it starts, then announced to plugins.
"""

from __future__ import annotations

import heapq
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from flowsh import calls, foreach, placed, plugins, steplog
from flowsh.bashglob import Stopped
from flowsh.conditions import IF_KEY, IfTests
from flowsh.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, LockHeldError, UsageError
from flowsh.events import DRAIN_LIMIT, Dispatcher, RunContext
from flowsh.executor import Outcome, StepRequest
from flowsh.graph import Graph
from flowsh.libstate import STATE_FILE, run_states
from flowsh.lock import WorkflowLock, hold_runner_lock, workflow_lock
from flowsh.model import ForeachCommand, Step, Workflow
from flowsh.paths import step_cwd
from flowsh.pools import POLL, PoolQueue
from flowsh.ready import ReadySet
from flowsh.resume import new_run, new_run_id, refuse_lost_secrets, take_up
from flowsh.runenv import RunEnvironment
from flowsh.runopts import GuardedReporter, Reporter, RunOptions
from flowsh.secrets import (
    drop_secret_outputs,
)
from flowsh.select import selection
from flowsh.signals import RunSignals
from flowsh.state import (
    FAILED,
    INTERRUPTED,
    PENDING,
    RETRYING,
    RUNNING,
    SKIPPED,
    SUCCEEDED,
    RunRecord,
    SkipReason,
    StateBackend,
    Status,
    StepRecord,
    ensure_private_dir,
    flowsh_home,
)
from flowsh.steps import build_argv, exit_kind, retry_delay, retryable
from flowsh.store import open_backend

if TYPE_CHECKING:
    from flowsh.uptodate import Tracker

__all__ = ["Engine", "Reporter", "RunOptions", "run_workflow"]

# The words a skipped step's record and the logs show (the exported script writes the same).
SKIP_MESSAGES = {
    SkipReason.CONDITION: "condition false",
    SkipReason.UPSTREAM: "upstream failed",
    SkipReason.RUN_FAILED: "run failed",
    SkipReason.NOT_REACHED: "not reached",
    SkipReason.NOT_SELECTED: "not selected",
    SkipReason.UP_TO_DATE: "up to date",
}

HEARTBEAT_EVERY = 10.0


@dataclass
class Fan:
    """A `foreach` step under way: its instances, those still to start, those started."""

    parent: str
    names: list[str]
    limit: int
    queue: deque[str] = field(default_factory=deque)
    active: set[str] = field(default_factory=set)
    # Instances not final yet: the step ends when none is left (a count, not a scan of
    # every instance at every end: 10,000 items stay linear).
    open: set[str] = field(default_factory=set)
    outputs: dict[int, dict[str, str]] = field(default_factory=dict)  # item index -> real


class Engine:
    def __init__(
        self, wf: Workflow, options: RunOptions, backend: StateBackend,
        lock: WorkflowLock | None = None,
    ) -> None:
        self.wf = wf
        self.lock = lock
        self.opt = options
        self.backend = backend
        self.reporter = GuardedReporter(options.reporter or Reporter())
        self.graph = Graph.build(wf)
        self.steps = {s.name: s for s in wf.steps}
        self.concurrency = options.concurrency or wf.concurrency
        self.failed = False  # a failure that stops new (non-`always`) steps
        self.stop_asked: Callable[[], bool] = lambda: False  # a signal came (RunSignals)
        self.waiting: list[tuple[float, str]] = []  # (wake time, step) for retries
        self.running: set[str] = set()
        # Steps waiting for a slot of a shared pool (POOL-4), with what they will run with.
        # With a backend that shares slots between hosts (PostgreSQL), through it too.
        pooled = any(s.pool for s in wf.steps)
        remote = getattr(backend, "pool_locks", None) if pooled else None
        self.pools = PoolQueue(dict(wf.pools), remote() if remote is not None else None)
        self.pool_wait: dict[str, tuple[dict[str, str], Path]] = {}
        self.ready = ReadySet(self.graph, self.steps)
        self.exports: dict[str, dict[str, str]] = {}  # env each step passes downstream
        # Who set each exported value, as a rank in the run order (OUT-2): of two values of
        # one name, the one set downstream (or, between unrelated steps, later in the run
        # order) wins, whatever the order of a `needs` list.
        self.origins: dict[str, dict[str, int]] = {}
        self.rank = {n: i for i, n in enumerate(self.graph.order)}
        self.borrowed: dict[str, dict[str, str]] = {}  # outputs of steps not selected
        self.fans: dict[str, Fan] = {}  # foreach steps under way (FOREACH)
        self.instance_of: dict[str, tuple[Fan, int]] = {}  # instance -> its fan, item index
        # `foreach: {command:}` steps whose command runs: (it, its env, its cwd)
        self.expanding: dict[str, tuple[foreach.Expansion, dict[str, str], Path]] = {}
        self.last_beat = 0.0
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

    # -- the loop ---------------------------------------------------------------------

    def execute(self) -> RunRecord:
        self.renv = RunEnvironment(self.wf, self.opt.params, self.opt.resume)
        self.renv.secret_names |= calls.called_secrets(self.wf)  # CALL-4: they stay secret
        # The executor exists before the run is recorded: one that cannot start (a broker
        # that is down) is an error with nothing left behind.
        on_output = self.reporter.step_output if self.reporter.wants_output else None
        self.executor = self.executor_factory(
            on_output=on_output, mask=self.renv.mask, **self.wf.executor_options)
        try:
            return self._execute_locked()
        finally:
            self.executor.close()

    def _execute_locked(self) -> RunRecord:
        run_id = self.opt.resume.run_id if self.opt.resume else (self.opt.run_id or new_run_id())
        # The liveness lock is taken before the run is recorded, so a `running` record
        # without a held lock always means a dead runner (store.check_liveness).
        self.run_dir = ensure_private_dir(flowsh_home() / "runs" / run_id)
        self.if_tests = IfTests(self.wf, self.executor, self.run_dir)
        held = hold_runner_lock(self.run_dir, self.backend, run_id)
        if held is None:
            raise LockHeldError(f"run {run_id} is being run by another flowsh process right "
                                "now (overlap: allow, or a resume of a run still going)")
        runner_fd = held
        # A state backend whose locks live on a server (PostgreSQL) watches them from a
        # thread: a lock lost for good stops the run's steps at once (_beat raises it).
        watch = getattr(self.backend, "watch_locks", None)
        if watch is not None:
            watch(self.executor.wake)
        if self.opt.resume is not None:
            # What we were asked to resume was read before the locks were ours: another
            # runner may have run (or finished) it meanwhile. Read it again.
            fresh = self.backend.load_run(run_id)
            if fresh.status == SUCCEEDED and self.opt.only is None:
                runner_fd.release()
                plugins.warn(f"run {run_id} was finished by another runner meanwhile; "
                             "starting a new run")
                self.opt.resume = None
                self.renv = RunEnvironment(self.wf, self.opt.params, None,
                                           mask=self.renv.mask)
                return self._execute_locked()
            self.opt.resume = fresh
        if self.lock is not None:
            self.lock.note(run_id)
        # A resume stands for the slot its run was started for, not for today's (SLOT-4).
        slot = (self.opt.resume.scheduled_time if self.opt.resume is not None
                else self.opt.scheduled_time)
        self.renv.stand_for(slot)
        try:
            env = {**self.renv.env, "FLOWSH_RUN_ID": run_id, "FLOWSH_WORKFLOW": self.wf.name}
            self.renv.set_library(run_states(self.wf, self.run_dir, env,
                                             reuse=self.opt.resume is not None))
            if self.opt.resume is not None:
                refuse_lost_secrets(self.wf, self.graph, self.opt.resume, self.opt.only,
                                    lambda name, out: self.renv.unmask_outputs(
                                        self.run_dir, name, out))
            # Before the run is recorded: a selection that cannot be honoured is refused.
            left_out, self.borrowed = selection(
                self.backend, self.wf, self.graph, self.opt.select, self.opt.resume,
                self.opt.only, self.renv.unmask_outputs, self.run_dir.parent)
        except BaseException:
            runner_fd.release()
            if self.opt.resume is None:  # nothing was recorded: leave nothing behind
                import shutil

                shutil.rmtree(self.run_dir, ignore_errors=True)
            raise
        try:
            params = self.renv.masked_params()
            if self.opt.resume is not None:
                run = take_up(self.backend, self.wf, self.opt.resume, self.graph,
                              params, self.opt.only, self.executor)
            else:
                run = new_run(self.backend, self.wf, run_id, params, self.executor,
                              scheduled_time=self.opt.scheduled_time)
            self.run = run
            self.ready.pass_through = frozenset(left_out)
            self.events = Dispatcher(RunContext(
                run=run, workflow=self.wf, masker=self.renv.mask, run_dir=self.run_dir,
                options=dict(self.opt.plugin_options)))
            drain = DRAIN_LIMIT
            try:
                self._execute(run)
            except KeyboardInterrupt:
                drain = 2.0  # a second Ctrl-C: the user wants out now
                raise
            finally:
                self.pools.release_all()
                self.events.close(drain)
        finally:
            runner_fd.release()  # after the final state is written: see store.check_liveness
        return run

    def _execute(self, run: RunRecord) -> None:
        executor = self.executor
        self.reporter.run_started(run, self.wf)
        self.events.emit("flowsh_run_started")
        # Steps that succeeded in an earlier attempt of this run pass their outputs on.
        for name in self.graph.order:
            if run.steps[name].status == SUCCEEDED:
                outputs = self.renv.unmask_outputs(self.run_dir, name,
                                                   run.steps[name].outputs)
                self._export(name, outputs)
            elif name in self.ready.pass_through:  # exported again when it is skipped
                self._export(name, self.borrowed.get(name, {}))
        self.uptodate: Tracker | None = None
        if any(s.sources for s in self.wf.steps):
            # Only then: fingerprints (hashlib, the key file) are ~3 ms of every start.
            from flowsh.uptodate import tracker_for

            self.uptodate = tracker_for(
                self.wf, self.backend, run.run_id, self.renv.params,
                # `flowsh retry --step X` asks for X to run again, up to date or not.
                self.opt.force, self.opt.force_steps | (self.opt.only or set()))
        self.ready.consider(self.graph.order)
        try:
            with RunSignals(executor) as intr:
                self.stop_asked = lambda: intr.signum is not None
                if self.uptodate is not None:
                    # Expanding `sources:` and hashing them may take long: a signal stops it.
                    self.uptodate.stopped = self.stop_asked
                self._loop(intr)
        except BaseException as exc:
            executor.cancel_all()
            self._stop_expansions()
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
            self._finish_run(INTERRUPTED, EXIT_INTERRUPTED)
            raise
        if intr.signum is not None:
            self._finish_run(INTERRUPTED, EXIT_INTERRUPTED)
            return
        # A step interrupted while flowsh was not (a task revoked on a remote worker) is a
        # failure of the run like any other.
        failed = any(
            (r.status == FAILED and not self.steps[n].continue_on_failure)
            or r.status == INTERRUPTED
            for n, r in run.steps.items() if foreach.parent_of(n) is None
        )
        self._finish_run(FAILED if failed else SUCCEEDED, EXIT_FAILED if failed else EXIT_OK)

    def _loop(self, intr: RunSignals) -> None:
        while True:
            if intr.signum is not None:
                self.executor.cancel_all()
                self._drain_interrupted()
                return
            self._wake_retries()
            self._wake_pools()
            self._poll_expansions()
            self._start_ready()
            if (not self.running and not self.waiting and not self.pool_wait
                    and not self.expanding):
                return
            timeout = None
            if self.waiting:
                timeout = max(0.0, self.waiting[0][0] - time.time())
            if self.pool_wait or self.expanding:
                # another process frees a slot, or an expansion command ends, without
                # telling us: look again
                timeout = POLL if timeout is None else min(timeout, POLL)
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

    def _sleep(self, seconds: float, intr: RunSignals) -> None:
        end = time.time() + seconds
        check = getattr(self.backend, "check_locks", None)
        while intr.signum is None and time.time() < end:
            if check is not None:
                check()
            self.executor.wait(min(0.5, end - time.time()))

    def _beat(self) -> None:
        check = getattr(self.backend, "check_locks", None)
        if check is not None:
            check()
        now = time.time()
        if now - self.last_beat >= HEARTBEAT_EVERY:
            self.last_beat = now
            self.run.heartbeat = now
            self.backend.heartbeat(self.run)

    def _drain_interrupted(self) -> None:
        self._stop_expansions()
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
        for name in list(self.pool_wait):
            rec = self.run.steps[name]
            rec.status = INTERRUPTED
            rec.message = f"interrupted while waiting for pool {self.steps[name].pool}"
            rec.ended_at = time.time()
            self.pools.drop(name)
            del self.pool_wait[name]
            self._record_finished(rec)

    def _full(self) -> bool:
        # a step waiting for a pool slot counts: it has started as far as the run goes
        # (an expansion command is a process the run runs)
        return (len(self.running) + len(self.pool_wait) + len(self.expanding)
                >= self.concurrency)

    def _start_ready(self) -> None:
        """Start (or skip) what can go, in graph order, up to the concurrency limit:
        the items of foreach steps under way first (they have started), then new steps.
        Again while anything was acted on: a foreach step's items come to exist, or its
        end frees its dependents, in the middle of a pass."""
        acted = True
        while acted:
            if self.stop_asked():  # nothing new starts; the loop stops what runs
                return
            acted = self._start_instances()
            for name, why in self.ready.take(self.run.steps, self._full,
                                             lambda: self.failed):
                if self.stop_asked():
                    return
                acted = acted or bool(self.fans) or self.steps[name].foreach is not None
                if why is None:
                    self._start(self.steps[name], self.run.steps[name])
                else:
                    self._skip(self.run.steps[name], why)

    def _skip(self, rec: StepRecord, why: SkipReason, message: str | None = None) -> None:
        rec.status, rec.skip_reason = SKIPPED, why
        rec.message = message or SKIP_MESSAGES[why]
        if why == SkipReason.NOT_SELECTED:  # passes on what it gave the last time
            self._export(rec.name, self.borrowed.get(rec.name, {}))
        self._record_finished(rec)

    def _upstream(self, name: str) -> dict[str, str]:
        """What `name`'s dependencies pass on (their exports, merged by OUT-2's rule); an
        instance sees what its foreach step does."""
        return self._merged(self.graph.needs[foreach.parent_of(name) or name])[0]

    def _merged(self, needs: list[str]) -> tuple[dict[str, str], dict[str, int]]:
        """The exports of `needs` with who set each: per name, the value set latest in the
        run order (a downstream step's over its upstream's)."""
        if len(needs) == 1:
            return self.exports.get(needs[0], {}), self.origins.get(needs[0], {})
        merged: dict[str, str] = {}
        origin: dict[str, int] = {}
        for dep in needs:
            dep_origin = self.origins.get(dep, {})
            for key, value in self.exports.get(dep, {}).items():
                rank = dep_origin.get(key, -1)
                if rank > origin.get(key, -2):
                    merged[key], origin[key] = value, rank
        return merged, origin

    def _start(self, step: Step, rec: StepRecord) -> None:
        # The attempt counts once the step starts (or its `if:` test fails); the test sees
        # the number of the attempt it decides on (IF-4).
        env = self.renv.for_step(step, self._upstream(step.name), run_id=self.run.run_id,
                                 attempt=rec.attempts + 1,
                                 out_path=self.run_dir / f"{step.name}.out")
        cwd = step_cwd(self.wf, step)
        if self.uptodate is not None and rec.attempts == 0 and step.sources:
            upstream = self._upstream(step.name)
            try:
                old = self.uptodate.check(step, env, upstream)
            except Stopped:  # the run was asked to stop: the step never started
                return
            if old is not None:  # skipped; its last success's outputs are handed on
                self.uptodate.up_to_date(step, rec, old)
                self._export(step.name, rec.outputs)
                self._skip(rec, SkipReason.UP_TO_DATE)
                return
        if step.if_ is not None:
            self.running.add(IF_KEY + step.name)
            rec.pid = self.if_tests.start(
                step, env, cwd, self.renv.explicit_for(step, self._upstream(step.name)))
            if rec.pid is not None:
                self.backend.save_step(self.run, rec)  # still pending; the pid is for a resume
            return
        self._go(step, rec, env, cwd)

    def _go(self, step: Step, rec: StepRecord, env: dict[str, str], cwd: Path) -> None:
        """Launch an attempt, or queue it for its pool's slot (no attempt counted yet)."""
        if step.foreach is not None:
            self._fan_out(step, rec, env, cwd)
            return
        if step.pool is None or self.pools.acquire(step.name, step.pool):
            rec.attempts += 1
            self._launch(step, rec, env, cwd)
            return
        self.pool_wait[step.name] = (env, cwd)
        rec.message = f"waiting for pool {step.pool}"
        self.backend.save_step(self.run, rec)
        self.reporter.step_waiting(self.run, rec, step.pool)
        self.events.emit("flowsh_step_waiting", step=rec, pool=step.pool)

    # -- foreach (docs/semantics.md FOREACH) --------------------------------------------

    def _fan_out(self, step: Step, rec: StepRecord, env: dict[str, str], cwd: Path) -> None:
        """Expand the step's items (or take those recorded: a resume runs the same ones)
        and queue its instances; the step runs until every instance is final."""
        if rec.items is None:
            try:
                if isinstance(step.foreach, ForeachCommand):
                    self._expand_beside(step, rec, env, cwd)
                    return
                self._take_items(rec, foreach.expand(step, env, cwd))
            except foreach.ExpandError as exc:
                self._expansion_failed(step, rec, exc)
                return
        self._fan_items(step, rec, env, cwd)

    def _take_items(self, rec: StepRecord, items: list[str]) -> None:
        foreach.check_items(items)
        if self.renv.mask and any(self.renv.mask(i) != i for i in items):
            raise foreach.ExpandError("foreach: an item holds a secret's value; "
                                      "items name instances and are recorded")
        rec.items = items

    def _expansion_failed(self, step: Step, rec: StepRecord,
                          exc: foreach.ExpandError) -> None:
        rec.attempts += 1
        # A command's error line may show a secret it was handed.
        rec.status, rec.message, rec.pid = FAILED, self.renv.mask(str(exc)), None
        rec.started_at = rec.started_at or time.time()
        rec.ended_at = time.time()
        if not step.continue_on_failure:
            self.failed = True
        self._record_finished(rec)

    def _expand_beside(self, step: Step, rec: StepRecord, env: dict[str, str],
                       cwd: Path) -> None:
        """Start the step's items command; the loop polls it (`_poll_expansions`). The
        step is `running` with the command's pid meanwhile: a resume after a crash stops
        that command (its group) and expands again, nothing having been recorded."""
        exp = foreach.Expansion(step, env, cwd, self.run_dir / step.name, step.timeout)
        self.expanding[step.name] = (exp, env, cwd)
        rec.status, rec.started_at, rec.ended_at = RUNNING, time.time(), None
        rec.pid, rec.message = exp.pid, "expanding its items"
        self.backend.save_step(self.run, rec)

    def _poll_expansions(self) -> None:
        for name, (exp, env, cwd) in list(self.expanding.items()):
            step, rec = self.steps[name], self.run.steps[name]
            try:
                items = exp.poll()
                if items is None:
                    continue
                del self.expanding[name]
                self._take_items(rec, items)
            except foreach.ExpandError as exc:
                self.expanding.pop(name, None)
                self._expansion_failed(step, rec, exc)
                continue
            rec.pid = None
            self._fan_items(step, rec, env, cwd)

    def _stop_expansions(self) -> None:
        """An interrupt: the commands are killed; their steps were not attempted."""
        for name, (exp, _, _) in list(self.expanding.items()):
            exp.stop()
            del self.expanding[name]
            rec = self.run.steps[name]
            rec.status, rec.ended_at, rec.pid = INTERRUPTED, time.time(), None
            rec.message = "interrupted while expanding its items"
            self.failed = True
            self._record_finished(rec)

    def _fan_items(self, step: Step, rec: StepRecord, env: dict[str, str],
                   cwd: Path) -> None:
        items = rec.items
        assert items is not None
        rec.attempts += 1
        # The step's time includes its items command's, when it just ran one.
        expanded = rec.status == RUNNING and rec.started_at is not None
        rec.started_at = rec.started_at if expanded else time.time()
        rec.status, rec.ended_at = RUNNING, None
        rec.message = f"{len(items)} item{'s' * (len(items) != 1)}"
        self.backend.save_step(self.run, rec)
        self.reporter.step_started(self.run, rec)
        self.events.emit("flowsh_step_started", step=rec)
        names = foreach.instance_names(step.name, items)
        fan = Fan(step.name, names, min(step.max_parallel or self.concurrency,
                                        self.concurrency))
        self.fans[step.name] = fan
        for index, (name, item) in enumerate(zip(names, items, strict=True)):
            self.steps[name] = step.model_copy(update={
                "name": name, "foreach": None, "max_parallel": None, "if_": None,
                "env": {**step.env, **foreach.item_env(item, index)}})
            self.instance_of[name] = (fan, index)
            old = self.run.steps.get(name)
            if old is not None and old.status == SUCCEEDED:  # a resume: kept as it was
                fan.outputs[index] = self.renv.unmask_outputs(self.run_dir, name, old.outputs)
                continue
            inst = StepRecord(name=name, attempts=old.attempts if old else 0,
                              log_path=old.log_path if old else None)
            self.run.steps[name] = inst
            self.backend.save_step(self.run, inst)
            fan.queue.append(name)
            fan.open.add(name)
        self._fan_done(fan)

    def _start_instances(self) -> bool:
        """Start (or skip) queued instances; whether any was."""
        acted = False
        for fan in list(self.fans.values()):
            while fan.queue and not self._full() and len(fan.active) < fan.limit:
                acted = True
                name = fan.queue.popleft()
                step, rec = self.steps[name], self.run.steps[name]
                if self.failed and rec.attempts == 0 and not step.always:
                    self._skip(rec, SkipReason.RUN_FAILED)  # FAIL-2, as for any step
                    continue
                fan.active.add(name)
                env = self.renv.for_step(step, self._upstream(name), run_id=self.run.run_id,
                                         attempt=rec.attempts + 1,
                                         out_path=self.run_dir / f"{name}.out")
                self._go(step, rec, env, step_cwd(self.wf, step))
        return acted

    def _instance_finished(self, rec: StepRecord) -> None:
        fan, _ = self.instance_of[rec.name]
        fan.active.discard(rec.name)
        fan.open.discard(rec.name)
        self.backend.save_step(self.run, rec)
        self.reporter.step_finished(self.run, rec)
        self.events.emit("flowsh_step_finished", step=rec)
        self._fan_done(fan)

    def _fan_done(self, fan: Fan) -> None:
        """Once every instance is final, the step's own end (FOREACH-5, FOREACH-7)."""
        if fan.open:
            return
        recs = [self.run.steps[n] for n in fan.names]
        del self.fans[fan.parent]
        step, rec = self.steps[fan.parent], self.run.steps[fan.parent]
        rec.ended_at = time.time()
        bad = [r.name for r in recs if not r.lets_dependents_run]
        if any(r.status == INTERRUPTED for r in recs):
            rec.status, rec.message = INTERRUPTED, "an item was interrupted"
            self.failed = True
        elif bad:
            rec.status = FAILED
            failed = [r.name for r in recs if r.status == FAILED]
            rec.message = (f"{len(failed)} of {len(recs)} items failed: "
                           + ", ".join(failed[:3]) + (", ..." if len(failed) > 3 else ""))
            if len(bad) > len(failed):
                rec.message += f"; {len(bad) - len(failed)} not run"
            if not step.continue_on_failure:
                self.failed = True
        else:
            outputs = foreach.joined_outputs([fan.outputs[i] for i in sorted(fan.outputs)])
            rec.status = SUCCEEDED
            rec.message = None if recs else "no items"
            rec.outputs = self.renv.keep_outputs(self.run_dir, fan.parent, outputs)
            self._export(fan.parent, outputs)
        self._record_finished(rec)

    def _wake_pools(self) -> None:
        for name in self.pools.ready():
            env, cwd = self.pool_wait.pop(name)
            rec = self.run.steps[name]
            rec.attempts += 1
            self._launch(self.steps[name], rec, env, cwd)

    def _launch(self, step: Step, rec: StepRecord, env: dict[str, str], cwd: Path) -> None:
        log_path = self.run_dir / f"{step.name}.log"
        if rec.attempts > 1 or self.opt.resume is not None:
            # A fresh run directory has no outputs file; the step's `>>` creates it there
            # (in the 0700 run directory), which saves a file creation per step.
            Path(env["FLOWSH_OUTPUT"]).unlink(missing_ok=True)
        rec.status, rec.started_at, rec.ended_at = RUNNING, time.time(), None
        rec.exit_code = rec.signal = None
        rec.message, rec.log_path = None, str(log_path)
        if step.call is not None:  # CALL-2: the child run's id is the parent's, kept for resume
            rec.child_run = rec.child_run or new_run_id()
            env = calls.step_environment(
                env, self.wf, step, child_run=rec.child_run, parent_run=self.run.run_id,
                state_url=getattr(self.backend, "raw_url", self.backend.url),
                secrets=self.renv.secret_names)
        if rec.attempts > 1:
            steplog.append(log_path, f"--- flowsh: attempt {rec.attempts} ---\n")
        self.running.add(step.name)
        # Recorded `running` before it starts: a runner killed between the start and the
        # save below must not leave a record that reads "never started" (pending), or a
        # resume on another host, which cannot find the orphan, would start it again beside
        # it (REMOTE-3).
        rec.pid = rec.task_id = rec.queue = rec.worker = rec.queued_at = None
        self.backend.save_step(self.run, rec)
        if step.pool is not None:
            self.pools.prepare(step.name)
        rec.pid = self.executor.start(StepRequest(
            key=step.name,
            argv=build_argv(self.wf, step,
                            self.renv.explicit_for(step, self._upstream(step.name))),
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
        if step.pool is not None:
            # A daemon a keep_children step leaves behind must not keep the slot.
            self.pools.keep_for(step.name, rec.pid, group=not step.keep_children)
        placed.apply(self.executor, self.run.steps)
        # Again with its pid (and task id): resume can stop the orphan first.
        self.backend.save_step(self.run, rec)
        self.reporter.step_started(self.run, rec)
        self.events.emit("flowsh_step_started", step=rec)

    def _on_condition(self, name: str, outcome: Outcome) -> None:
        self.running.discard(IF_KEY + name)
        step, rec = self.steps[name], self.run.steps[name]
        rec.pid = None
        verdict = self.if_tests.finish(step, rec, outcome)
        if verdict.action == "interrupted":  # the step never started: no attempt counted
            rec.status, rec.message = INTERRUPTED, "interrupted during its `if` test"
            rec.ended_at = time.time()
            self.failed = True
            self._record_finished(rec)
        elif verdict.action == "run":
            self._go(step, rec, verdict.env, verdict.cwd)
        elif verdict.action == "skip":
            self._skip(rec, SkipReason.CONDITION)
        else:
            rec.attempts += 1  # a broken test fails the step: that attempt counts
            if not step.continue_on_failure:
                self.failed = True
            self._record_finished(rec)

    def _on_outcome(self, name: str, outcome: Outcome) -> None:
        if name.startswith(IF_KEY):
            self._on_condition(name[len(IF_KEY):], outcome)
            return
        self.running.discard(name)
        self.pools.release(name)
        if name in self.instance_of:
            self.instance_of[name][0].active.discard(name)
        step, rec = self.steps[name], self.run.steps[name]
        rec.exit_code, rec.signal, rec.pid = outcome.exit_code, outcome.signal, None
        rec.ended_at = outcome.ended_at
        placed.record(rec, outcome.placement)
        kind = exit_kind(step, outcome)
        outputs, bad = self.renv.take_outputs(self.run_dir, name, read=kind == "ok",
                                              text=outcome.outputs)
        if kind == "skip":  # outputs discarded, as for a failure; dependents run
            self._skip(rec, SkipReason.EXIT_CODE, f"exit {outcome.exit_code}")
            return
        if kind == "ok" and bad is None:
            rec.outputs = self.renv.keep_outputs(self.run_dir, name, outputs)
            rec.status = SUCCEEDED
            rec.message = None
            if self.uptodate is not None:
                self.uptodate.succeeded(step, rec)
            self._export(name, outputs)
            self._record_finished(rec)
            return
        rec.message = bad or outcome.describe()
        if outcome.interrupted:
            rec.status = INTERRUPTED
            self.failed = True  # nothing new starts; `always` steps still run
            self._record_finished(rec)
            return
        if rec.attempts <= step.retry_count and retryable(step, outcome):
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
        """What `name` passes downstream: its dependencies' exports plus its own outputs.
        An instance's are kept for its foreach step, which hands them on joined."""
        if name in self.instance_of:
            fan, index = self.instance_of[name]
            fan.outputs[index] = outputs
            return
        merged, origin = self._merged(self.graph.needs[name])
        if outputs:  # never into a dict shared with a dependency
            rank = self.rank[name]
            merged, origin = {**merged, **outputs}, {**origin, **dict.fromkeys(outputs, rank)}
        self.exports[name], self.origins[name] = merged, origin  # shared when unchanged

    def _wake_retries(self) -> None:
        now = time.time()
        while self.waiting and self.waiting[0][0] <= now:
            _, name = heapq.heappop(self.waiting)
            self.run.steps[name].status = PENDING
            if name in self.instance_of:  # back to the head of its step's queue
                self.instance_of[name][0].queue.appendleft(name)
            else:
                self.ready.consider([name])

    def _record_finished(self, rec: StepRecord) -> None:
        if rec.name in self.instance_of:
            self._instance_finished(rec)
            return
        if rec.name not in self.exports:
            # Failed or skipped: its own outputs are discarded (a failed step's file may
            # hold half of them); what it received from steps that succeeded passes on.
            self._export(rec.name, {})
        self.ready.consider(self.graph.dependents[rec.name])
        self.backend.save_step(self.run, rec)
        self.reporter.step_finished(self.run, rec)
        self.events.emit("flowsh_step_finished", step=rec)

    def _finish_run(self, status: Status, code: int) -> None:
        run = self.run
        if run.ended_at is not None and run.status == status:
            return
        for fan in self.fans.values():  # interrupted with items still to go
            rec = run.steps[fan.parent]
            if rec.status == RUNNING:
                rec.status, rec.ended_at = INTERRUPTED, time.time()
                rec.message = "run interrupted with items still to go"
                self.backend.save_step(run, rec)
        for rec in run.steps.values():
            if rec.status in (PENDING, RETRYING):
                if rec.name in self.ready.pass_through:  # a resume leaves it out too
                    rec.status, rec.skip_reason = SKIPPED, SkipReason.NOT_SELECTED
                    rec.message = SKIP_MESSAGES[SkipReason.NOT_SELECTED]
                elif status == INTERRUPTED:
                    rec.status = INTERRUPTED
                    rec.message = rec.message or "run interrupted"
                else:
                    rec.status, rec.skip_reason = SKIPPED, SkipReason.NOT_REACHED
                    rec.message = rec.message or SKIP_MESSAGES[SkipReason.NOT_REACHED]
                self.backend.save_step(run, rec)
        run.status, run.exit_code, run.ended_at = status, code, time.time()
        self.backend.update_run(run)
        if status == SUCCEEDED:  # nothing left to resume: the secrets go
            drop_secret_outputs(self.run_dir)
            if self.renv.library_has_secrets():
                # A later `flowsh retry` of this run evaluates the libraries again.
                (self.run_dir / STATE_FILE).unlink(missing_ok=True)
        self.reporter.run_finished(run)
        self.events.emit("flowsh_run_finished")


@contextmanager
def _backend(options: RunOptions, wf_state: str | None) -> Iterator[StateBackend]:
    if options.backend is not None:
        yield options.backend
        return
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
            workflow_lock(wf.identity, overlap, timeout, backend) as lock:
        return Engine(wf, options, backend, lock).execute()


def run_series(wf: Workflow, options: RunOptions,
               plan: Callable[[StateBackend], list[RunOptions]]) -> list[RunRecord]:
    """Runs one after another under one hold of the overlap lock (catch-up, CATCHUP-3):
    `plan(backend)`, called once the lock is held, gives each run's options. A run that
    was interrupted (Ctrl-C, SIGTERM) ends the series."""
    overlap = options.overlap or wf.overlap
    timeout = options.lock_timeout if options.lock_timeout is not None else wf.lock_timeout
    runs: list[RunRecord] = []
    with _backend(options, wf.state) as backend, \
            workflow_lock(wf.identity, overlap, timeout, backend) as lock:
        for opts in plan(backend):
            runs.append(Engine(wf, opts, backend, lock).execute())
            if runs[-1].status == INTERRUPTED:
                break
    return runs
