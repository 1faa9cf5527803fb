#!/usr/bin/env python3
"""Trials of issue 13's promises on real parts: coordinator kills and worker losses.

Two real flowsh-celery workers with distinct node names (`-n hostA-…@%h`, `-n hostB-…@%h`),
each started in a working directory of its own, stand for two hosts (they share this
machine's network and filesystem: no network namespace, which needs root and a veth per
host). State is PostgreSQL, in a schema of the script's own (dropped at the end); the
coordinator that runs and the one that resumes have FLOWSH_HOMEs and directories of their
own, as two coordinator hosts would.

Coordinator kills (`--trials`, default 20): a workflow of five steps (a chain and a
fan-out) whose every attempt appends `start`/`end` lines with a timestamp and an attempt
id to a trace file, and holds an flock on its step's file while it lives (the kernel
drops it only when every process of the attempt is gone, so a second attempt that cannot
take it at once writes `OVERLAP`). `flowsh run` is killed with -9 at a random moment,
then `flowsh resume` runs on the other coordinator (a kill that came after the run's end
is redone). Checked from the trace: no step ever had two attempts live at once (no
OVERLAP, and no two start..end intervals crossing); every attempt the trace saw start is
one the record counts; every step succeeded. An attempt that ended after the coordinator
died, before the resume, is run again (the dead coordinator never recorded its end): such
steps are counted apart ("reruns"), as the at-least-once price of a crash.

Worker losses (`--loss-trials`, default 5 of each kind): a step runs on one worker and
that worker is harmed; the time from the harm to the coordinator's `step_retrying` event
(`flowsh run --json`) is the time to notice. Kinds: `main` (kill -9 of the worker's main
process only), `all` (kill -9 of its whole process group: main and pool processes; the
step's supervisor lives in a session of its own), `stop` (SIGSTOP of the whole group: a
hung worker), `freeze` (SIGSTOP of the worker and every process below it, the step's
supervisor and processes included: a paused VM; only the coordinator can notice).

    python scripts/trials_distributed.py [--trials 20] [--loss-trials 5] [--json out.json]

Needs the flowsh-celery plugin, Redis at 127.0.0.1:6379 (db 13 by default, flushed) and
PostgreSQL at postgresql://postgres@127.0.0.1/test.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.celery_worker import Cluster, Worker, descendants  # noqa: E402

PG = "postgresql://postgres@127.0.0.1/test"
REDIS = "redis://127.0.0.1:6379/13"
STEPS = ("extract", "left", "right", "join", "publish")


@dataclass
class KillTrial:
    trial: int
    kill_after: float  # seconds after the run was recorded
    phase: str  # what was running when the coordinator died
    resumed: bool
    resume_exit: int | None
    status: str
    overlaps: list[str] = field(default_factory=list)
    ends: dict[str, int] = field(default_factory=dict)
    attempts: dict[str, int] = field(default_factory=dict)
    workers: dict[str, str] = field(default_factory=dict)
    recorded_attempts: dict[str, int] = field(default_factory=dict)
    # Steps whose first attempt ended (its end line written) but the dead coordinator
    # never recorded it: the resume ran them again, after it (no overlap).
    reruns: list[str] = field(default_factory=list)
    ok: bool = False


@dataclass
class LossTrial:
    kind: str
    trial: int
    noticed_after: float | None  # seconds from the harm to step_retrying
    message: str
    run_exit: int | None
    overlaps: list[str] = field(default_factory=list)


class Coordinator:
    """A `flowsh` of a host: its own directory, FLOWSH_HOME and the shared state URL."""

    def __init__(self, root: Path, name: str, state: str, broker: str, queue: str) -> None:
        self.dir = root / name
        self.dir.mkdir(parents=True)
        self.env = {**os.environ, "FLOWSH_HOME": str(self.dir / "home"),
                    "XDG_CONFIG_HOME": str(self.dir / "config"), "FLOWSH_STATE": state,
                    "FLOWSH_LOAD_ENTRYPOINTS": "1", "FLOWSH_PLUGINS": "celery",
                    "FLOWSH_CELERY_BROKER": broker, "FLOWSH_CELERY_QUEUE": queue}
        self.env.pop("FLOWSH_CELERY_BACKEND", None)

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "flowsh", *args], cwd=self.dir,
                                env=self.env, text=True, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)

    def cli(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "flowsh", *args], cwd=self.dir,
                              env=self.env, text=True, capture_output=True, timeout=timeout,
                              check=False)

    def status(self, run_id: str) -> dict[str, Any]:
        res = self.cli("status", run_id, "--json")
        return dict(json.loads(res.stdout)) if res.returncode == 0 else {}


def traced(body: str, trace: Path, locks: Path) -> str:
    """A step's text: flock on its step's file, start line, body, end line."""
    return textwrap.dedent(f"""\
        a="$FLOWSH_STEP.$FLOWSH_ATTEMPT.$$.$RANDOM"
        exec 9>>'{locks}'/"$FLOWSH_STEP"
        if ! flock -n 9; then
          echo "OVERLAP $FLOWSH_STEP $a $(date +%s.%N)" >> '{trace}'; flock 9
        fi
        echo "start $FLOWSH_STEP $a $(date +%s.%N)" >> '{trace}'
        {body}
        echo "end $FLOWSH_STEP $a $(date +%s.%N)" >> '{trace}'
        """)


def workflow(path: Path, trace: Path, locks: Path, queue: str, *, name: str,
             steps: dict[str, tuple[str, list[str]]], retries: int = 0) -> Path:
    lines = [f"name: {name}", "executor: celery",
             f"executor_options: {{queue: {queue}, lost_after: 10}}",
             "kill_grace: 1s", "steps:"]
    for step, (body, needs) in steps.items():
        text = traced(body, trace, locks)
        lines += [f"  - name: {step}", f"    retries: {retries}", "    retry_delay: 0s"]
        if needs:
            lines.append(f"    needs: [{', '.join(needs)}]")
        lines.append("    run: |")
        lines += ["      " + ln for ln in text.splitlines()]
    path.write_text("\n".join(lines) + "\n")
    return path


def read_trace(trace: Path) -> list[list[str]]:
    try:
        return [ln.split() for ln in trace.read_text().splitlines() if ln.strip()]
    except FileNotFoundError:
        return []


def overlaps(rows: list[list[str]]) -> list[str]:
    """OVERLAP lines, and attempts of one step whose start..end intervals cross."""
    found = [" ".join(r) for r in rows if r[0] == "OVERLAP"]
    spans: dict[str, dict[str, list[float]]] = {}
    for _, step, attempt, at in (r[:4] for r in rows if r[0] in ("start", "end")):
        spans.setdefault(step, {}).setdefault(attempt, []).append(float(at))
    for step, attempts in spans.items():
        done = sorted((v[0], v[1], a) for a, v in attempts.items() if len(v) == 2)
        for (_, e1, a1), (s2, _, a2) in itertools.pairwise(done):
            if s2 < e1:
                found.append(f"{step}: {a2} started {e1 - s2:.3f}s before {a1} ended")
    return found


def run_id_of(coord: Coordinator, workflow_name: str, after: set[str]) -> str | None:
    res = coord.cli("history", workflow_name, "--json")
    if res.returncode != 0 or not res.stdout.strip():
        return None
    ids = [r["run_id"] for r in json.loads(res.stdout) if r["run_id"] not in after]
    return ids[0] if ids else None


def wait_for(cond: Any, limit: float) -> bool:
    deadline = time.monotonic() + limit
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def kill_trial(i: int, root: Path, a: Coordinator, b: Coordinator, queue: str,
               seen: set[str]) -> KillTrial:
    d = root / f"kill{i}"
    (d / "locks").mkdir(parents=True)
    trace = d / "trace"
    steps = {"extract": ("sleep 2", []), "left": ("sleep 2", ["extract"]),
             "right": ("sleep 3", ["extract"]), "join": ("sleep 1.5", ["left", "right"]),
             "publish": ("sleep 1", ["join"])}
    flow = workflow(d / "flow.yaml", trace, d / "locks", queue, name=f"trial{i}", steps=steps)
    proc = a.start("run", str(flow), "--quiet")
    run_id = None
    if wait_for(lambda: run_id_of(a, f"trial{i}", seen) is not None, 60):
        run_id = run_id_of(a, f"trial{i}", seen)
    if run_id is None:
        proc.kill()
        raise RuntimeError(f"trial {i}: the run was never recorded: {proc.communicate()}")
    seen.add(run_id)
    # The moment of the crash is the trial's input: anywhere in the run's ~7.5 s.
    after = random.uniform(0.0, 6.5)
    time.sleep(after)
    live = {r[1] for r in read_trace(trace) if r[0] == "start"} - \
        {r[1] for r in read_trace(trace) if r[0] == "end"}
    phase = ",".join(sorted(live)) or ("between steps" if read_trace(trace) else "before any")
    proc.kill()
    proc.communicate()
    resumed, code = False, None
    if a.status(run_id).get("status") != "succeeded":
        res = b.cli("resume", run_id, "--quiet")
        resumed, code = True, res.returncode
        if res.returncode != 0:
            print(f"  trial {i}: resume exit {res.returncode}: {res.stderr.strip()}")
    rec = b.status(run_id)
    rows = read_trace(trace)
    t = KillTrial(i, round(after, 2), phase, resumed, code, rec.get("status", "?"))
    t.overlaps = overlaps(rows)
    for step in STEPS:
        t.ends[step] = sum(1 for r in rows if r[0] == "end" and r[1] == step)
        t.attempts[step] = sum(1 for r in rows if r[0] == "start" and r[1] == step)
    steps_rec = rec.get("steps", {})
    if isinstance(steps_rec, list):
        steps_rec = {s["name"]: s for s in steps_rec}
    for name, s in steps_rec.items():
        t.workers[name] = (s.get("worker") or "?").split("-")[0]
        t.recorded_attempts[name] = int(s.get("attempts") or 0)
    recorded = {name: s.get("status") for name, s in steps_rec.items()}
    t.reruns = [s for s in STEPS if t.ends[s] > 1]
    # Every step succeeded as recorded, and its last attempt is one the trace saw end.
    t.ok = not t.overlaps and t.status == "succeeded" and t.recorded_attempts == t.attempts \
        and all(recorded.get(s) == "succeeded" and t.ends[s] >= 1 for s in STEPS)
    return t


def loss_trial(kind: str, i: int, root: Path, a: Coordinator, cluster: Cluster,
               queue: str) -> LossTrial:
    d = root / f"loss-{kind}{i}"
    (d / "locks").mkdir(parents=True)
    trace = d / "trace"
    flow = workflow(d / "flow.yaml", trace, d / "locks", queue, name=f"loss{kind}{i}",
                    steps={"long": ("sleep 12", [])}, retries=1)
    proc = a.start("run", str(flow), "--json")
    events: list[dict[str, Any]] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("{"):
                events.append(json.loads(line))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    t = LossTrial(kind, i, None, "", None)
    frozen: list[int] = []
    try:
        if not wait_for(lambda: any(r[0] == "start" for r in read_trace(trace)), 60):
            t.message = "the step never started"
            return t
        run_id = next((e["run_id"] for e in events if e["event"] == "run_started"), "")
        where: list[str] = []

        def placed() -> bool:
            step = a.status(run_id).get("steps", {}).get("long", {})
            where[:] = [step.get("worker") or ""]
            return bool(where[0])

        wait_for(placed, 30)
        victim = next((w for w in cluster.workers if w.name == where[0]), None)
        if victim is None:
            t.message = f"no worker of ours runs the step ({where})"
            return t
        harmed = time.time()
        if kind == "main":
            os.kill(victim.proc.pid, signal.SIGKILL)
        elif kind == "all":
            os.killpg(victim.proc.pid, signal.SIGKILL)
        elif kind == "stop":
            os.killpg(victim.proc.pid, signal.SIGSTOP)
        else:  # freeze: the step's supervisor and processes too, as a paused VM
            frozen = [victim.proc.pid, *descendants(victim.proc.pid)]
            for pid in frozen:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGSTOP)
        wait_for(lambda: proc.poll() is not None or
                 any(e["event"] == "step_retrying" for e in events), 90)
        retry = next((e for e in events if e["event"] == "step_retrying"), None)
        # A frozen host that never comes back is a dead one: its attempt's flock would
        # hold the retry (the trace's own check) forever otherwise.
        for pid in frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if retry is not None:
            t.noticed_after = round(retry["time"] - harmed, 2)
            t.message = str(retry.get("message"))
        else:
            t.message = "no retry: the attempt went on" if proc.poll() == 0 else "none"
        try:
            proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        reader.join(5)
        t.run_exit = proc.returncode
        # A frozen attempt keeps its flock until it is killed below: its OVERLAP line says
        # only that it was still there, frozen (no start..end of it crosses the retry's).
        t.overlaps = [o for o in overlaps(read_trace(trace))
                      if kind != "freeze" or not o.startswith("OVERLAP")]
        return t
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def summary(values: list[float]) -> str:
    if not values:
        return "-"
    return (f"min {min(values):.2f} s, median {statistics.median(values):.2f} s, "
            f"max {max(values):.2f} s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=20,
                    help="coordinator kills of a live run (a kill after its end is redone)")
    ap.add_argument("--loss-trials", type=int, default=5, help="worker losses of each kind")
    ap.add_argument("--kinds", default="main,all,stop,freeze",
                    help="worker-loss kinds to run")
    ap.add_argument("--redis", default=REDIS, help="broker and result backend (flushed)")
    ap.add_argument("--pg", default=PG, help="PostgreSQL (a schema of its own is used)")
    ap.add_argument("--json", type=Path, default=Path("trials_distributed.json"))
    ap.add_argument("--seed", type=int, default=None)
    args = ap.parse_args()
    random.seed(args.seed)
    import psycopg
    import redis

    redis.Redis.from_url(args.redis).flushdb()
    schema = f"trials_{uuid.uuid4().hex[:10]}"
    state = f"{args.pg}?options=-csearch_path%3D{schema}"
    root = Path(tempfile.mkdtemp(prefix="flowsh-trials-"))
    queue = f"trials-{uuid.uuid4().hex[:6]}"
    a = Coordinator(root, "coordA", state, args.redis, queue)
    b = Coordinator(root, "coordB", state, args.redis, queue)
    cluster = Cluster(root / "hosts", broker=args.redis)
    kills: list[KillTrial] = []
    losses: list[LossTrial] = []
    try:
        for host in ("hostA", "hostB"):
            cluster.start(host, [queue])
        seen: set[str] = set()
        i = 0
        while len([t for t in kills if t.resumed]) < args.trials and i < 3 * args.trials:
            t = kill_trial(i, root, a, b, queue, seen)
            i += 1
            kills.append(t)
            print(f"kill {t.trial:2d} at {t.kill_after:4.2f}s ({t.phase}): resumed={t.resumed} "
                  f"status={t.status} attempts={sum(t.attempts.values())} "
                  f"overlaps={len(t.overlaps)} reruns={','.join(t.reruns) or '-'} "
                  f"{'ok' if t.ok else 'FAILED ' + str(t.ends)}",
                  flush=True)
        for kind in [k for k in args.kinds.split(",") if k]:
            for i in range(args.loss_trials):
                t2 = loss_trial(kind, i, root, a, cluster, queue)
                losses.append(t2)
                print(f"loss {kind:4s} {i}: noticed after {t2.noticed_after} s "
                      f"({t2.message}), run exit {t2.run_exit}, overlaps {len(t2.overlaps)}",
                      flush=True)
                # The harmed worker is replaced, so each trial starts with two hosts.
                for w in list(cluster.workers):
                    if w.proc.poll() is not None or is_stopped(w):
                        w.kill()
                        cluster.workers.remove(w)
                        cluster.start(w.log.parent.name, [queue])
    finally:
        cluster.stop()
        with psycopg.connect(args.pg, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        shutil.rmtree(root, ignore_errors=True)
    report(kills, losses, args.json)
    bad = [t for t in kills if not t.ok] + [t for t in losses if t.overlaps]
    return 1 if bad else 0


def is_stopped(w: Worker) -> bool:
    try:
        return Path(f"/proc/{w.proc.pid}/stat").read_text().split()[2] == "T"
    except (OSError, IndexError):
        return False


def report(kills: list[KillTrial], losses: list[LossTrial], out: Path) -> None:
    print()
    print("| coordinator kills | value |")
    print("|---|---|")
    print(f"| kills of a live run (then resumed on the other coordinator) | "
          f"{sum(t.resumed for t in kills)} |")
    print(f"| kills that came after the run's end (not counted, redone) | "
          f"{sum(not t.resumed for t in kills)} |")
    print(f"| trials with an overlapping attempt | {sum(bool(t.overlaps) for t in kills)} |")
    print("| runs succeeded, every attempt in the trace recorded, every step succeeded | "
          f"{sum(t.ok for t in kills)} |")
    print("| steps run again after an unrecorded end (trials) | "
          f"{sum(len(t.reruns) for t in kills)} ({sum(bool(t.reruns) for t in kills)}) |")
    print(f"| attempts started, all trials | {sum(sum(t.attempts.values()) for t in kills)} |")
    print()
    print("| worker harmed | trials | noticed (coordinator's retry) | overlaps |")
    print("|---|---|---|---|")
    for kind in dict.fromkeys(t.kind for t in losses):
        ts = [t for t in losses if t.kind == kind]
        seen = [t.noticed_after for t in ts if t.noticed_after is not None]
        note = summary(seen) if seen else "not lost: " + ts[0].message
        print(f"| {kind} | {len(ts)} | {note} ({len(seen)} of {len(ts)}) | "
              f"{sum(len(t.overlaps) for t in ts)} |")
    out.write_text(json.dumps({"kills": [asdict(t) for t in kills],
                               "losses": [asdict(t) for t in losses],
                               "load": os.getloadavg()}, indent=1) + "\n")
    print(f"\n(JSON: {out})")


if __name__ == "__main__":
    sys.exit(main())
