"""`if:` tests, run as jobs of the executor like steps (docs/semantics.md IF statements).

A test takes a concurrency slot, has the step's environment (FLOWSH_ATTEMPT of the coming
attempt) and timeout, its leftovers are stopped, an interrupt stops it, and its pid is
recorded so that a resume after a crash stops it before anything runs again. Exit 0 runs
the step, exit 1 skips it; anything else (2 from `[`, 127, a signal, the timeout) fails it.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from flowsh import steplog
from flowsh.executor import Executor, Outcome, StepRequest
from flowsh.model import Step, Workflow
from flowsh.state import FAILED, StepRecord
from flowsh.steps import build_argv

# The executor key of a step's test; a step name never holds a colon (model.STEP_NAME).
IF_KEY = "if:"


@dataclass
class Verdict:
    action: Literal["run", "skip", "interrupted", "failed"]
    env: dict[str, str]
    cwd: Path


class IfTests:
    def __init__(self, wf: Workflow, executor: Executor, run_dir: Path) -> None:
        self.wf = wf
        self.executor = executor
        self.run_dir = run_dir
        # Steps whose test runs: the environment and workdir their attempt starts with.
        self.pending: dict[str, tuple[dict[str, str], Path]] = {}

    def _log(self, name: str) -> Path:
        # `@` is in no step name: `a`'s test never meets the log of a step named `a.if`.
        return self.run_dir / f"{name}@if.log"

    def start(self, step: Step, env: dict[str, str], cwd: Path,
              keep: Iterable[str] = ()) -> int | None:
        """Start `step`'s test; the executor reports it under IF_KEY + the step's name."""
        out = self._log(step.name)
        out.unlink(missing_ok=True)
        self.pending[step.name] = (env, cwd)
        return self.executor.start(StepRequest(
            key=IF_KEY + step.name,
            # With the step's libraries, as the step (IF-1, ENV-1); `keep` as build_argv's.
            argv=build_argv(self.wf, step, keep, if_test=True),
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
            run_id=env.get("FLOWSH_RUN_ID", ""),
        ))

    def finish(self, step: Step, rec: StepRecord, outcome: Outcome) -> Verdict:
        """What the test's outcome means for the step. A failed test is recorded on `rec`
        (and in the step's log) here; the caller counts attempts and records states."""
        env, cwd = self.pending.pop(step.name)
        out = self._log(step.name)
        try:
            with out.open("rb") as fh:  # masked as written, by the executor
                fh.seek(max(0, out.stat().st_size - 16384))
                err = fh.read().decode(errors="replace")
        except OSError:
            err = ""
        out.unlink(missing_ok=True)
        if outcome.interrupted:
            return Verdict("interrupted", env, cwd)
        if outcome.ok:
            return Verdict("run", env, cwd)
        if outcome.exit_code == 1 and not outcome.signal and not outcome.error:
            return Verdict("skip", env, cwd)
        code = None if outcome.signal or outcome.error else outcome.exit_code
        _record_failure(step, rec, self.run_dir / f"{step.name}.log", code, outcome.signal,
                        err or (outcome.error or ""),
                        "timed out" if outcome.timed_out else None)
        return Verdict("failed", env, cwd)


def _record_failure(step: Step, rec: StepRecord, log_path: Path, code: int | None,
                    sig: int | None, err: str, how: str | None) -> None:
    now = time.time()
    rec.started_at = rec.ended_at = now
    rec.exit_code, rec.signal, rec.log_path = code, sig, str(log_path)
    how = how or (f"exit {code}" if code is not None else (
        f"signal {signal.Signals(sig).name}" if sig else "error"))
    detail = " ".join(err.strip().splitlines()[-1:]) or "(no message)"
    rec.message = f"the `if` test failed ({how}): {detail}"
    steplog.append(log_path, f"flowsh: `if: {step.if_}` failed ({how})\n{err}")
    rec.status = FAILED
