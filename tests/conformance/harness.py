"""The conformance harness: a case (data) run through one runtime, and what came of it.

A case is a workflow, the files it needs, its arguments and what must happen (see
cases/README.md). Runtimes: `run` (`flowsh run`), `script` and `inline` (the script
`flowsh export --bash [--inline]` writes, run under `env -i PATH=/usr/bin:/bin`), and
`celery` (`flowsh run --executor celery`, each step a task on the real Celery worker that
test_conformance.py starts for the session; `CELERY` holds how to reach it). What is
compared is what a user sees: the exit code, each step's last recorded status in the CSV
log, the files steps wrote, and stderr.
"""

from __future__ import annotations

import contextlib
import csv
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from tests.celery_worker import Worker

HERE = Path(__file__).resolve().parent
CASES = HERE / "cases"
RUNTIMES = ("run", "script", "inline", "celery")
# Set by the session's worker fixture: FLOWSH_CELERY_BROKER and FLOWSH_CELERY_QUEUE, and
# the worker's log (`$WORKER_LOG` in a `before:`; /dev/null on the other runtimes).
CELERY: dict[str, str] = {}
CELERY_LOG: list[str] = []


@contextlib.contextmanager
def serving(worker: Worker) -> Iterator[None]:
    """The `celery` runtime sends its steps to `worker` within the block."""
    CELERY.update(FLOWSH_CELERY_BROKER=worker.broker, FLOWSH_CELERY_QUEUE=worker.queue)
    CELERY_LOG[:] = [str(worker.log)]
    try:
        yield
    finally:
        CELERY.clear()
        CELERY_LOG.clear()
TIMEOUT = 120
# A PostgreSQL server (`postgresql://postgres@127.0.0.1/test`) to keep the `run` and
# `celery` runtimes' state in, instead of each case's SQLite file: each case gets a schema
# of its own, dropped after it. Not part of the default suite (scripts/test).
PG_STATE = os.environ.get("FLOWSH_CONFORMANCE_STATE", "")


@dataclass
class Case:
    id: str
    proves: list[str]
    workflow: Any
    files: dict[str, str] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    runtimes: list[str] = field(default_factory=lambda: list(RUNTIMES))
    why: str = ""
    expect: dict[str, Any] = field(default_factory=dict)
    then: list[dict[str, Any]] = field(default_factory=list)
    before: str = ""
    source: str = ""


def load_cases() -> list[Case]:
    out: list[Case] = []
    for path in sorted(CASES.glob("*.yaml")):
        for raw in yaml.safe_load(path.read_text()) or []:
            then = raw.pop("then", [])
            out.append(Case(**raw, then=then if isinstance(then, list) else [then],
                            source=path.name))
    return out


@dataclass
class Result:
    exit: int
    steps: dict[str, str]
    stderr: str
    stdout: str
    files: dict[str, str | None]


def _write_files(case: Case, work: Path) -> None:
    wf = case.workflow
    text = wf if isinstance(wf, str) else yaml.safe_dump(wf, sort_keys=False)
    (work / "flow.yaml").write_text(text)
    for rel, content in case.files.items():
        path = work / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        if rel.endswith(".sh"):
            path.chmod(0o755)


def _csv_rows(home: Path) -> list[list[str]]:
    try:
        with (home / "logs" / "workflow_logs.csv").open(newline="") as fh:
            return list(csv.reader(fh))[1:]
    except FileNotFoundError:
        return []


def _statuses(rows: list[list[str]]) -> dict[str, str]:
    """Each step's last status among `rows` (the rows one invocation appended)."""
    out: dict[str, str] = {}
    for row in rows:
        if len(row) >= 4 and row[2] != "-":
            out[row[2]] = row[3]
    return out


class Runner:
    """Runs one case on one runtime in its own directory and FLOWSH_HOME."""

    def __init__(self, case: Case, runtime: str, root: Path) -> None:
        self.case, self.runtime = case, runtime
        self.work, self.home = root / "w", root / "home"
        self.work.mkdir(parents=True)
        self.home.mkdir()
        self.script = self.work / "flow.sh"
        self.export_error: subprocess.CompletedProcess[str] | None = None
        self.schema = f"flowsh_conformance_{os.getpid()}_{id(self):x}"

    def _state_env(self) -> dict[str, str]:
        if not PG_STATE or self.runtime not in ("run", "celery"):
            return {}
        return {"FLOWSH_STATE": f"{PG_STATE}?options=-csearch_path%3D{self.schema}"}

    def drop_state(self) -> None:
        if self._state_env():
            import psycopg

            with psycopg.connect(PG_STATE, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')

    def _plugin_env(self) -> dict[str, str]:
        """No third-party plugin, but for the celery runtime its own (and its worker)."""
        if self.runtime != "celery":
            return {"FLOWSH_LOAD_ENTRYPOINTS": "0"}
        if not CELERY:
            raise RuntimeError("the celery runtime needs the session's worker (CELERY unset)")
        return {"FLOWSH_LOAD_ENTRYPOINTS": "1", "FLOWSH_PLUGINS": "celery", **CELERY}

    def _env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {**os.environ, "FLOWSH_HOME": str(self.home),
               "XDG_CONFIG_HOME": str(self.home / "config")}
        for name in ("FLOWSH_STATE", "FLOWSH_PLUGINS", "FLOWSH_DISABLE_PLUGINS",
                     "FLOWSH_CELERY_BACKEND"):
            env.pop(name, None)
        env.update({**self._plugin_env(), **self._state_env(), **self.case.env,
                    **(extra or {})})
        return env

    def _flowsh(self, *args: str, extra: dict[str, str] | None = None
                ) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "flowsh", *args], cwd=self.work,
                              env=self._env(extra), capture_output=True, text=True,
                              timeout=TIMEOUT, check=False)

    def prepare(self) -> None:
        _write_files(self.case, self.work)
        if self.runtime in ("script", "inline"):
            args = ["export", "--bash", "flow.yaml", "-o", str(self.script)]
            if self.runtime == "inline":
                args.insert(2, "--inline")
            res = self._flowsh(*args)
            if res.returncode != 0:
                self.export_error = res

    def invoke(self, args: list[str], extra_env: dict[str, str]) -> Result:
        before = len(_csv_rows(self.home))
        if self.export_error is not None:
            res = self.export_error
        elif self.runtime == "run":
            res = self._flowsh("run", "flow.yaml", *args, extra=extra_env)
        elif self.runtime == "celery":
            res = self._flowsh("run", "flow.yaml", "--executor", "celery", *args,
                               extra=extra_env)
        else:
            env = {"PATH": "/usr/bin:/bin", "HOME": str(self.home),
                   "FLOWSH_HOME": str(self.home), **self.case.env, **extra_env}
            res = subprocess.run(["bash", str(self.script), *args], cwd=self.work, env=env,
                                 capture_output=True, text=True, timeout=TIMEOUT, check=False)
        return Result(res.returncode, _statuses(_csv_rows(self.home)[before:]), res.stderr,
                      res.stdout, {})

    def command(self) -> str:
        """This runtime's invocation as shell text: `$RUN` in a case's `before:`."""
        import shlex

        if self.runtime in ("run", "celery"):
            # FLOWSH_STATE comes from `shell`'s environment: $RUN is split unquoted.
            env = " ".join(f"{k}={shlex.quote(v)}" for k, v in self._plugin_env().items())
            tail = " --executor celery" if self.runtime == "celery" else ""
            return f"env {env} {shlex.quote(sys.executable)} -m flowsh run flow.yaml{tail}"
        return (f"env -i PATH=/usr/bin:/bin HOME={shlex.quote(str(self.home))} "
                f"FLOWSH_HOME={shlex.quote(str(self.home))} bash {shlex.quote(str(self.script))}")

    def shell(self, text: str) -> None:
        base = dict(os.environ)
        subprocess.run(["bash", "-c", text], cwd=self.work, check=True, timeout=TIMEOUT,
                       env={**base, "FLOWSH_HOME": str(self.home), "RUN": self.command(),
                            "PYTHON": sys.executable, "WORKER_LOG": self._worker_log(),
                            **self._state_env()})

    def _worker_log(self) -> str:
        return CELERY_LOG[0] if self.runtime == "celery" and CELERY_LOG else "/dev/null"

    def read(self, rel: str) -> str | None:
        try:
            return (self.work / rel).read_text()
        except FileNotFoundError:
            return None


def run_case(case: Case, runtime: str, root: Path) -> list[tuple[dict[str, Any], Result]]:
    """Every invocation of the case (the first, then each `then:`) with its expectation."""
    runner = Runner(case, runtime, root)
    runner.prepare()
    out = []
    stages = [{"before": case.before, "args": case.args, "expect": case.expect}, *case.then]
    try:
        for stage in stages:
            if stage.get("before"):
                runner.shell(stage["before"])
            result = runner.invoke([str(a) for a in stage.get("args", [])],
                                   stage.get("env", {}))
            expect = stage.get("expect", {})
            result.files = {rel: runner.read(rel) for rel in
                            [*expect.get("files", {}), *expect.get("absent", [])]}
            out.append((expect, result))
    finally:
        runner.drop_state()
    return out


def mismatches(expect: dict[str, Any], got: Result) -> list[str]:
    """What in `got` differs from `expect` (empty: conforms)."""
    bad = []
    if "exit" in expect and got.exit != expect["exit"]:
        bad.append(f"exit {got.exit}, expected {expect['exit']}")
    for step, status in (expect.get("steps") or {}).items():
        if got.steps.get(step) != status:
            bad.append(f"step {step}: {got.steps.get(step)}, expected {status}")
    if "only_steps" in expect and set(got.steps) != set(expect["only_steps"]):
        bad.append(f"steps recorded {sorted(got.steps)}, expected {sorted(expect['only_steps'])}")
    for rel, text in (expect.get("files") or {}).items():
        if got.files.get(rel) != text:
            bad.append(f"file {rel}: {got.files.get(rel)!r}, expected {text!r}")
    for rel in expect.get("absent") or []:
        if got.files.get(rel) is not None:
            bad.append(f"file {rel} exists, expected absent")
    for part in _as_list(expect.get("stderr")):
        if part not in got.stderr:
            bad.append(f"stderr lacks {part!r}")
    for part in _as_list(expect.get("output")):
        if part not in got.stderr + got.stdout:
            bad.append(f"output lacks {part!r}")
    if expect.get("no_traceback", True) and "Traceback" in got.stderr:
        bad.append("a traceback")
    if bad:
        bad.append(f"stderr: {got.stderr[-1500:]}")
    return bad


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)
