#!/usr/bin/env python3
"""flowsh benchmark: overhead per step, fan-out efficiency, cold start, planning, memory.

Every flowsh figure is measured next to a baseline run in the same process, on the same
machine, one workload at a time (never concurrently: the reference machines have 2 cores).
Each measurement is repeated (3 times by default) and the median is kept.

    python scripts/bench.py                 # full run, a few minutes
    python scripts/bench.py --quick         # smaller N, fewer repeats, < 1 minute
    python scripts/bench.py --json-out results.json --flowsh /path/to/flowsh

Figures are printed as a table (with the target each is held to) and written as JSON.
Nothing here asserts: the benchmark reports, people judge. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MS = 1000.0
MIB = 1024.0  # ru_maxrss is in KiB on Linux


# -- running children ---------------------------------------------------------------------


@dataclass
class Child:
    wall: float  # seconds, perf_counter
    maxrss_kib: int  # the child's own peak RSS (and its reaped descendants')
    returncode: int
    cpu: float = 0.0  # user + system seconds of the child and its reaped descendants


def run_child(
    argv: list[str], *, env: dict[str, str] | None = None, cwd: str | None = None,
    stdout: str = "devnull",
) -> Child:
    """Run argv to the end; wall time and the child's own ru_maxrss via os.wait4.

    stdout: "devnull" (both streams to /dev/null) or "pipe" (both to a pipe that this
    process reads and discards, like `flowsh run ... | cat` would).
    """
    if stdout == "pipe":
        out: Any = subprocess.PIPE
    else:
        out = subprocess.DEVNULL
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out,
                            stderr=subprocess.STDOUT)
    reader = None
    if proc.stdout is not None:
        pipe = proc.stdout

        def drain() -> None:
            while pipe.read(65536):
                pass

        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
    _, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)  # Popen must not reap it again
    if reader is not None:
        reader.join()
        assert proc.stdout is not None
        proc.stdout.close()
    return Child(wall=wall, maxrss_kib=ru.ru_maxrss, returncode=proc.returncode,
                 cpu=ru.ru_utime + ru.ru_stime)


def median_child(repeats: int, fn: Callable[[], Child], what: str) -> Child:
    """Median wall over `repeats` runs (peak RSS: the max seen). A failing run is fatal:
    a benchmark of a failing workload measures nothing."""
    runs = []
    for _ in range(repeats):
        c = fn()
        if c.returncode != 0:
            raise SystemExit(f"bench: {what} exited {c.returncode}")
        runs.append(c)
    return Child(
        wall=statistics.median(c.wall for c in runs),
        maxrss_kib=max(c.maxrss_kib for c in runs),
        returncode=0,
        cpu=statistics.median(c.cpu for c in runs),
    )


# -- generated inputs -----------------------------------------------------------------------


def chain_yaml(path: Path, n: int) -> Path:
    lines = [f"name: chain{n}", "steps:"]
    for i in range(n):
        lines += [f"  - name: s{i}", '    run: "true"']
    path.write_text("\n".join(lines) + "\n")
    return path


def chain_bash(path: Path, n: int) -> Path:
    path.write_text("#!/bin/bash\nset -e\n" + "bash -c true\n" * n)
    return path


def fanout_yaml(path: Path, n: int, seconds: float) -> Path:
    lines = [f"name: fanout{n}", "steps:"]
    for i in range(n):
        lines += [f"  - name: f{i}", f'    run: "sleep {seconds}"', "    needs: []"]
    path.write_text("\n".join(lines) + "\n")
    return path


def fanout_makefile(path: Path, n: int, seconds: float) -> Path:
    names = " ".join(f"f{i}" for i in range(n))
    text = f".PHONY: all {names}\nall: {names}\n"
    for i in range(n):
        text += f"f{i}:\n\t@sleep {seconds}\n"
    path.write_text(text)
    return path


# Luigi's side of W1, W2 and W3: each step is a task running `bash -c TEXT`, as flowsh runs a
# step, and marks itself done with a file (a Luigi task's output), so every run gets a fresh
# directory. A chain has each task require the one before; a fan-out a wrapper require all.
LUIGI_TASKS = """\
import subprocess

import luigi


class Step(luigi.Task):
    i = luigi.IntParameter()
    dir = luigi.Parameter()
    text = luigi.Parameter()
    chain = luigi.BoolParameter()

    def requires(self):
        if self.chain and self.i > 0:
            return Step(i=self.i - 1, dir=self.dir, text=self.text, chain=True)
        return []

    def output(self):
        return luigi.LocalTarget(f"{self.dir}/{self.i}")

    def run(self):
        subprocess.run(["bash", "-c", self.text], check=True)
        with self.output().open("w"):
            pass


class All(luigi.WrapperTask):
    n = luigi.IntParameter()
    dir = luigi.Parameter()
    text = luigi.Parameter()
    chain = luigi.BoolParameter()

    def requires(self):
        if self.chain:
            return Step(i=self.n - 1, dir=self.dir, text=self.text, chain=True)
        return [Step(i=i, dir=self.dir, text=self.text) for i in range(self.n)]
"""


def luigi_python(given: str | None, flowsh: str) -> str | None:
    """An interpreter that imports luigi: --luigi, else this one or flowsh's if either can."""
    candidates = [given] if given else [sys.executable, str(Path(flowsh).with_name("python"))]
    for py in candidates:
        if py and subprocess.run([py, "-c", "import luigi"], capture_output=True).returncode == 0:
            return py
    if given:
        raise SystemExit(f"bench: --luigi {given}: cannot import luigi")
    return None


def dag_yaml(path: Path, n: int, seed: int = 42) -> Path:
    """A random DAG: step i needs 0-3 distinct earlier steps."""
    rnd = random.Random(seed)
    lines = [f"name: dag{n}", "steps:"]
    for i in range(n):
        k = min(i, rnd.randint(0, 3))
        deps = sorted(rnd.sample(range(i), k)) if k else []
        lines += [f"  - name: d{i}", f'    run: "echo {i}"',
                  "    needs: [" + ", ".join(f"d{d}" for d in deps) + "]"]
    path.write_text("\n".join(lines) + "\n")
    return path


# -- in-process spawn cost ------------------------------------------------------------------


def fill_history(db: Path, n: int) -> None:
    """`n` finished runs of 3 steps each, written through flowsh's own schema."""
    from flowsh.builtin.state_sqlite import RUN_COLS, STEP_COLS, SQLiteBackend

    backend = SQLiteBackend(f"sqlite:///{db}")
    t0 = time.time() - n * 60
    runs, steps = [], []
    # By column name, so a column added to the schema (steps' pid) does not break this.
    for i in range(n):
        rid = f"bench-{i:07d}"
        start = t0 + i * 60
        run = {"run_id": rid, "workflow": f"wf{i % 7}", "file": "/x.yaml",
               "definition_hash": "h", "params": "{}", "status": "succeeded", "pid": 1,
               "host": "host", "started_at": start, "ended_at": start + 5,
               "heartbeat": start + 5, "exit_code": 0, "step_names": '["a", "b", "c"]'}
        runs.append(tuple(run.get(c) for c in RUN_COLS))
        for name in ("a", "b", "c"):
            step = {"run_id": rid, "name": name, "status": "succeeded", "attempts": 1,
                    "exit_code": 0, "started_at": start, "ended_at": start + 1,
                    "outputs": "{}"}
            steps.append(tuple(step.get(c) for c in STEP_COLS))
    backend.conn.execute("PRAGMA synchronous=OFF")  # a scratch database: fill it fast
    with backend.conn:
        backend.conn.executemany(
            f"INSERT INTO runs VALUES ({','.join('?' * len(RUN_COLS))})", runs)
        backend.conn.executemany(
            f"INSERT INTO steps VALUES ({','.join('?' * len(STEP_COLS))})", steps)
    backend.close()


def spawn_costs(calls: int, repeats: int) -> dict[str, float]:
    """Seconds per call of each way to run `true` from Python (median of `repeats`)."""
    true = shutil.which("true") or "/bin/true"
    env = dict(os.environ)

    def sh_call() -> None:
        import sh  # the user's library for tool calls

        cmd = sh.Command(true)
        for _ in range(calls):
            cmd()

    def sp_run() -> None:
        for _ in range(calls):
            subprocess.run([true], check=True)

    def sp_popen() -> None:
        for _ in range(calls):
            p = subprocess.Popen([true], stdin=subprocess.DEVNULL, start_new_session=True,
                                 close_fds=True)
            p.wait()

    def spawn() -> None:
        for _ in range(calls):
            pid = os.posix_spawn(true, [true], env)
            os.waitpid(pid, 0)

    out = {}
    for name, fn in (("sh", sh_call), ("subprocess_run", sp_run),
                     ("popen_new_session", sp_popen), ("posix_spawn", spawn)):
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) / calls)
        out[name] = statistics.median(times)
    return out


# -- flowsh serve ---------------------------------------------------------------------------


# The servers' token (`flowsh serve` always wants one): given to them, sent by every client.
_TOKEN = f"bench-{os.getpid()}-{random.getrandbits(64):x}"
_AUTH = {"Authorization": f"Bearer {_TOKEN}"}


class _server:
    """`flowsh serve --port 0` as a child; its base URL once it answers."""

    def __init__(self, flowsh: str, env: dict[str, str], flows: Path) -> None:
        self.argv = [flowsh, "serve", "--port", "0", "--workflows", str(flows)]
        self.env = {**env, "FLOWSH_UI_TOKEN": _TOKEN}
        self.out = Path(env["FLOWSH_HOME"]) / "serve.out"

    def __enter__(self) -> str:
        import re

        import httpx

        Path(self.env["FLOWSH_HOME"]).mkdir(parents=True, exist_ok=True)
        with open(self.out, "wb") as fh:
            self.proc = subprocess.Popen(self.argv, env=self.env, stdout=fh,
                                         stderr=subprocess.STDOUT)
        end = time.monotonic() + 60
        while time.monotonic() < end:
            m = re.search(r"http://[^/]+:(\d+)/", self.out.read_text())
            if m:
                url = f"http://127.0.0.1:{m.group(1)}"
                try:
                    if httpx.get(url + "/api/v1/session", headers=_AUTH).status_code == 200:
                        return url
                except httpx.TransportError:
                    pass
            if self.proc.poll() is not None:
                raise SystemExit(f"flowsh serve exited: {self.out.read_text()}")
            time.sleep(0.05)
        raise SystemExit("flowsh serve did not answer within 60 s")

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def _p95(url: str, n: int) -> float:
    """p95 seconds of `n` sequential GETs on one keep-alive connection (after 5 warm-ups)."""
    import httpx

    times = []
    with httpx.Client(timeout=30, headers=_AUTH) as client:
        for i in range(n + 5):
            t0 = time.perf_counter()
            r = client.get(url)
            dt = time.perf_counter() - t0
            if r.status_code != 200:
                raise SystemExit(f"GET {url}: {r.status_code} {r.text[:200]}")
            if i >= 5:
                times.append(dt)
    times.sort()
    return times[min(len(times) - 1, int(len(times) * 0.95))]


def _watched_run(url: str, clients: int) -> float:
    """Start `watched` through the API; `clients` SSE clients follow it to its end. The
    run's own recorded duration (ended_at - started_at)."""
    import httpx

    with httpx.Client(base_url=url, timeout=60, headers=_AUTH) as c:
        csrf = c.get("/api/v1/session").json()["csrf_token"]
        r = c.post("/api/v1/runs", json={"workflow": "watched"},
                   headers={"X-CSRF-Token": csrf})
        run_id = r.json()["run_id"]

        def follow() -> None:
            with httpx.Client(base_url=url, timeout=60, headers=_AUTH) as mine, \
                    mine.stream("GET", f"/api/v1/runs/{run_id}/events") as resp:
                for line in resp.iter_lines():
                    if line.startswith("data:") and json.loads(line[5:])["status"] != "running":
                        return

        threads = [threading.Thread(target=follow, daemon=True) for _ in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        while True:
            run = c.get(f"/api/v1/runs/{run_id}").json()
            if run["status"] != "running":
                break
            time.sleep(0.1)
        if run["status"] != "succeeded":
            raise SystemExit(f"the watched run {run_id} {run['status']}")
        return float(run["ended_at"] - run["started_at"])


# -- the report -----------------------------------------------------------------------------


@dataclass
class Row:
    name: str
    value: float
    unit: str
    baseline: float | None = None
    baseline_name: str = ""
    target: str = ""
    ok: bool | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.baseline in (None, 0):
            return None
        assert self.baseline is not None
        return self.value / self.baseline


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)

    def add(self, row: Row) -> None:
        self.rows.append(row)
        print(f"  {row.name}: {_fmt(row.value, row.unit)}"
              + (f" (vs {row.baseline_name} {_fmt(row.baseline, row.unit)})"
                 if row.baseline is not None else ""), file=sys.stderr)

    def table(self) -> str:
        head = ("figure", "flowsh", "baseline", "ratio", "target", "ok")
        body = []
        for r in self.rows:
            base = f"{_fmt(r.baseline, r.unit)} {r.baseline_name}" if r.baseline is not None \
                else ""
            ratio = f"{r.ratio:.2f}x" if r.ratio is not None else ""
            ok = "" if r.ok is None else ("PASS" if r.ok else "MISS")
            body.append((r.name, _fmt(r.value, r.unit), base.strip(), ratio, r.target, ok))
        widths = [max(len(str(x[i])) for x in (head, *body)) for i in range(len(head))]
        lines = ["  ".join(str(c).ljust(w) for c, w in zip(head, widths, strict=True))]
        lines.append("  ".join("-" * w for w in widths))
        lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True))
                  for row in body]
        return "\n".join(lines)

    def json(self, meta: dict[str, Any]) -> dict[str, Any]:
        return {
            "meta": meta,
            "rows": [
                {"name": r.name, "value": r.value, "unit": r.unit, "baseline": r.baseline,
                 "baseline_name": r.baseline_name, "ratio": r.ratio, "target": r.target,
                 "ok": r.ok, "note": r.note}
                for r in self.rows
            ],
            "raw": self.raw,
        }


def _fmt(v: float | None, unit: str) -> str:
    if v is None:
        return ""
    if unit == "s":
        return f"{v:.3f} s"
    if unit == "ms":
        return f"{v:.2f} ms"
    if unit == "MiB":
        return f"{v:.1f} MiB"
    return f"{v:.3f}"


# -- workloads ------------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.repeats = args.repeats or (1 if args.quick else 3)
        self.flowsh = args.flowsh
        self.luigi = luigi_python(args.luigi, args.flowsh)
        self.report = Report()
        self._home = 0

    def env(self) -> dict[str, str]:
        """A fresh, empty FLOWSH_HOME for each flowsh run: no history, no cached state."""
        self._home += 1
        home = self.work / f"home{self._home}"
        env = dict(os.environ)
        env["FLOWSH_HOME"] = str(home)
        env.pop("FLOWSH_STATE", None)
        env.pop("FLOWSH_DEBUG", None)
        return env

    def flowsh_run(self, argv: list[str], stdout: str = "devnull") -> Callable[[], Child]:
        return lambda: run_child([self.flowsh, *argv], env=self.env(), cwd=str(self.work),
                                 stdout=stdout)

    def luigi_run(self, n: int, text: str, *, chain: bool, workers: int = 1
                  ) -> Callable[[], Child]:
        """A run of `n` Luigi tasks with the local scheduler (only when self.luigi)."""
        assert self.luigi is not None
        luigi = self.luigi
        (self.work / "luigi_tasks.py").write_text(LUIGI_TASKS)

        def run() -> Child:
            out = tempfile.mkdtemp(prefix="luigi-", dir=self.work)
            argv = [luigi, "-m", "luigi", "--module", "luigi_tasks", "All",
                    "--n", str(n), "--dir", out, "--text", text, "--local-scheduler",
                    "--workers", str(workers), "--no-lock"]
            if chain:
                argv.append("--chain")
            env = {**os.environ, "PYTHONPATH": str(self.work)}
            c = run_child(argv, env=env, cwd=str(self.work))
            if c.returncode == 0 and len(os.listdir(out)) != n:
                c.returncode = 1  # Luigi exits 0 when a task fails; count what it did
            return c
        return run

    # W1 ------------------------------------------------------------------------------
    def w1(self) -> None:
        small, big = (50, 500) if self.args.quick else (200, 2000)
        print(f"W1: chain of `true` steps, N={small} and N={big}", file=sys.stderr)
        res: dict[str, dict[int, Child]] = {}
        variants: dict[str, Callable[[Path], Callable[[], Child]]] = {
            "bash": lambda f: lambda: run_child(
                ["bash", str(f.with_suffix(".sh"))], cwd=str(self.work)),
            "flowsh": lambda f: self.flowsh_run(["run", "-q", str(f)]),
            "flowsh_memory": lambda f: self.flowsh_run(
                ["run", "-q", "--state", "sqlite:///:memory:", str(f)]),
            "flowsh_stream": lambda f: self.flowsh_run(["run", str(f)], stdout="pipe"),
        }
        files = {}
        for n in (small, big):
            files[n] = chain_yaml(self.work / f"chain{n}.yaml", n)
            chain_bash(self.work / f"chain{n}.sh", n)
        if self.luigi is not None:
            size = {f: n for n, f in files.items()}
            variants["luigi"] = lambda f: self.luigi_run(size[f], "true", chain=True)
        # Interleaved (round after round of every variant) rather than 3 runs in a row,
        # so a change in the machine's load lands on flowsh and its baseline alike.
        samples: dict[tuple[str, int], list[Child]] = {}
        for _ in range(self.repeats):
            for n in (small, big):
                for name, make in variants.items():
                    c = make(files[n])()
                    if c.returncode != 0:
                        raise SystemExit(f"bench: W1 {name} N={n} exited {c.returncode}")
                    samples.setdefault((name, n), []).append(c)
        for (name, n), runs in samples.items():
            c = Child(wall=statistics.median(x.wall for x in runs),
                      maxrss_kib=max(x.maxrss_kib for x in runs), returncode=0,
                      cpu=statistics.median(x.cpu for x in runs))
            res.setdefault(name, {})[n] = c
            print(f"  {name:14} N={n:5}: {c.wall:7.3f} s  "
                  f"{c.wall / n * MS:6.2f} ms/step  cpu {c.cpu / n * MS:6.2f} ms/step  "
                  f"maxrss {c.maxrss_kib / MIB:.1f} MiB",
                  file=sys.stderr)
        self.report.raw["w1"] = {
            name: {str(n): {"wall_s": c.wall, "cpu_s": c.cpu, "maxrss_mib": c.maxrss_kib / MIB}
                   for n, c in per_n.items()}
            for name, per_n in res.items()
        }

        def slope(name: str, cpu: bool = False) -> float:
            a, b = res[name][small], res[name][big]
            return ((b.cpu - a.cpu) if cpu else (b.wall - a.wall)) / (big - small)

        bash_step = slope("bash")
        r = self.report
        r.add(Row(f"W1 wall per step, N={big} (-q, sqlite)", res["flowsh"][big].wall / big * MS,
                  "ms", res["bash"][big].wall / big * MS, "bash"))
        fl = slope("flowsh")
        r.add(Row("W1 marginal cost per step (slope)", fl * MS, "ms", bash_step * MS, "bash",
                  target="<= bash + 1.0 ms", ok=fl - bash_step <= 0.001))
        r.add(Row("W1 marginal overhead over bash", (fl - bash_step) * MS, "ms",
                  target="<= 1.0 ms", ok=fl - bash_step <= 0.001,
                  note="peers: parallel 2.7, Luigi 2.8, Snakemake 17, Prefect 39 ms/step"))
        if "luigi" in res:
            lu = slope("luigi")
            r.add(Row("W1 marginal cost per step vs Luigi", fl * MS, "ms", lu * MS, "Luigi",
                      note=f"Luigi's CPU per step over bash "
                           f"{(slope('luigi', cpu=True) - slope('bash', cpu=True)) * MS:.2f} ms"))
        # CPU seconds (user+sys of flowsh and every step it ran) hold up better than wall
        # time when other work shares the machine: waiting for a core is not counted.
        fl_cpu, bash_cpu = slope("flowsh", cpu=True), slope("bash", cpu=True)
        r.add(Row("W1 marginal CPU per step (slope)", fl_cpu * MS, "ms", bash_cpu * MS, "bash",
                  note="user+sys, flowsh process and its steps"))
        r.add(Row("W1 marginal CPU overhead over bash", (fl_cpu - bash_cpu) * MS, "ms",
                  target="<= 0.6 ms", ok=fl_cpu - bash_cpu <= 0.0006))
        fixed = res["flowsh"][small].wall - small * fl
        r.add(Row("W1 fixed cost per run (intercept)", fixed, "s",
                  res["bash"][small].wall - small * bash_step, "bash",
                  note="start-up, load, validate, state set-up, exit"))
        mem = slope("flowsh_memory")
        r.add(Row("W1 marginal per step, state in memory", mem * MS, "ms", bash_step * MS,
                  "bash"))
        r.add(Row("W1 durable checkpoint cost per step", (fl - mem) * MS, "ms",
                  target="< 1 ms", ok=fl - mem < 0.001,
                  note="slope(sqlite file) - slope(sqlite :memory:)"))
        mem_cpu = slope("flowsh_memory", cpu=True)
        r.add(Row("W1 durable checkpoint CPU per step", (fl_cpu - mem_cpu) * MS, "ms",
                  target="< 1 ms", ok=fl_cpu - mem_cpu < 0.001,
                  note="CPU slope(sqlite file) - CPU slope(sqlite :memory:)"))
        st = slope("flowsh_stream")
        r.add(Row("W1 marginal per step, streaming to a pipe", st * MS, "ms", fl * MS,
                  "flowsh -q"))
        peak = max(c.maxrss_kib for name in ("flowsh", "flowsh_memory", "flowsh_stream")
                   for c in res[name].values()) / MIB
        r.add(Row(f"W1 peak RSS, N={big}", res["flowsh"][big].maxrss_kib / MIB, "MiB",
                  res["bash"][big].maxrss_kib / MIB, "bash", target="< 50 MiB",
                  ok=peak < 50, note=f"max over W1 flowsh variants {peak:.1f} MiB"))

    # PG -----------------------------------------------------------------------------
    def pg(self) -> None:
        """Per-step cost of PostgreSQL state against SQLite (`--only pg`; needs --pg URL)."""
        import uuid

        import psycopg

        small, big = (50, 500) if self.args.quick else (200, 1000)
        print(f"PG: chain of `true` steps on sqlite and postgresql state, N={small} and N={big}",
              file=sys.stderr)
        files = {n: chain_yaml(self.work / f"pgchain{n}.yaml", n) for n in (small, big)}
        schemas: list[str] = []

        def pg_url() -> str:
            schemas.append(f"flowsh_bench_{uuid.uuid4().hex[:8]}")
            return f"{self.args.pg}?options=-csearch_path%3D{schemas[-1]}"

        samples: dict[tuple[str, int], list[Child]] = {}
        try:
            for _ in range(self.repeats):
                for n in (small, big):
                    for name in ("sqlite", "postgresql"):
                        state = (f"sqlite:///{self.work}/pg{n}.db" if name == "sqlite"
                                 else pg_url())
                        c = self.flowsh_run(["run", "-q", "--state", state, str(files[n])])()
                        if c.returncode != 0:
                            raise SystemExit(f"bench: PG {name} N={n} exited {c.returncode}")
                        samples.setdefault((name, n), []).append(c)
        finally:
            with psycopg.connect(self.args.pg, autocommit=True) as conn:
                for schema in schemas:
                    conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        wall = {k: statistics.median(c.wall for c in v) for k, v in samples.items()}
        cpu = {k: statistics.median(c.cpu for c in v) for k, v in samples.items()}
        slope = {name: (wall[(name, big)] - wall[(name, small)]) / (big - small)
                 for name in ("sqlite", "postgresql")}
        cpu_slope = {name: (cpu[(name, big)] - cpu[(name, small)]) / (big - small)
                     for name in ("sqlite", "postgresql")}
        for name in ("sqlite", "postgresql"):
            print(f"  {name:10} {slope[name] * MS:6.2f} ms/step  cpu "
                  f"{cpu_slope[name] * MS:6.2f} ms/step", file=sys.stderr)
        r = self.report
        r.add(Row("PG marginal per step, postgresql state", slope["postgresql"] * MS, "ms",
                  slope["sqlite"] * MS, "sqlite",
                  note="3 transactions per step (started, finished, next), local server"))
        r.add(Row("PG marginal CPU per step (flowsh side)", cpu_slope["postgresql"] * MS, "ms",
                  cpu_slope["sqlite"] * MS, "sqlite", note="user+sys of flowsh and its steps"))
        r.add(Row("PG fixed cost per run", wall[("postgresql", small)] - small *
                  slope["postgresql"], "s", wall[("sqlite", small)] - small * slope["sqlite"],
                  "sqlite", note="connect, schema check, 2 lock connections"))
        self.report.raw["pg"] = {f"{k[0]}/{k[1]}": {"wall_s": wall[k], "cpu_s": cpu[k]}
                                 for k in wall}

    # W2 ------------------------------------------------------------------------------
    def w2(self) -> None:
        n, jobs, secs = 64, 8, 0.2
        ideal = n / jobs * secs
        print(f"W2: {n} x `sleep {secs}` at concurrency {jobs} (ideal {ideal:.2f} s)",
              file=sys.stderr)
        f = fanout_yaml(self.work / "fanout.yaml", n, secs)
        mk = fanout_makefile(self.work / "Makefile.fanout", n, secs)
        seq = "\n".join(str(i) for i in range(n)) + "\n"
        seqf = self.work / "seq.txt"
        seqf.write_text(seq)
        # The usual run is not a workflow's first: cron's every run after it finds its home
        # as the one before left it (parse cache, state, plugin scan), as W3's commands do.
        # The first run, in a new home, is shown beside it.
        warm = self.env()
        fan_argv = [self.flowsh, "run", "-q", "-j", str(jobs), str(f)]
        run_child(fan_argv, env=warm, cwd=str(self.work))
        cands: dict[str, Callable[[], Child]] = {
            "flowsh": lambda: run_child(fan_argv, env=warm, cwd=str(self.work)),
            "flowsh, new home": self.flowsh_run(["run", "-q", "-j", str(jobs), str(f)]),
            "xargs": lambda: run_child(
                ["bash", "-c", f'xargs -P {jobs} -I{{}} sleep {secs} < "$0"', str(seqf)]),
            "make": lambda: run_child(["make", "-s", f"-j{jobs}", "-f", str(mk)]),
        }
        if shutil.which("parallel"):
            cands["parallel"] = lambda: run_child(
                ["bash", "-c", f'parallel --will-cite -j{jobs} -N0 sleep {secs} < "$0"',
                 str(seqf)])
        if self.luigi is not None:
            cands["luigi"] = self.luigi_run(n, f"sleep {secs}", chain=False, workers=jobs)
        one = self.work / "one.yaml"
        one.write_text('name: one\nsteps:\n  - name: s\n    run: "true"\n')
        one_argv = [self.flowsh, "run", "-q", str(one)]
        run_child(one_argv, env=warm, cwd=str(self.work))
        cands["flowsh 1 step"] = lambda: run_child(one_argv, env=warm, cwd=str(self.work))
        # Interleaved rounds: a change in the machine's load lands on every variant alike.
        samples: dict[str, list[Child]] = {k: [] for k in cands}
        for _ in range(self.repeats):
            for name, fn in cands.items():
                c = fn()
                if c.returncode != 0:
                    raise SystemExit(f"bench: W2 {name} exited {c.returncode}")
                samples[name].append(c)
        got = {}
        for name, runs in samples.items():
            c = got[name] = Child(wall=statistics.median(x.wall for x in runs),
                                  maxrss_kib=max(x.maxrss_kib for x in runs), returncode=0,
                                  cpu=statistics.median(x.cpu for x in runs))
            print(f"  {name:16}: {c.wall:6.3f} s  efficiency {ideal / c.wall:.3f}",
                  file=sys.stderr)
        self.report.raw["w2"] = {k: {"wall_s": c.wall, "efficiency": ideal / c.wall,
                                     "maxrss_mib": c.maxrss_kib / MIB} for k, c in got.items()}
        eff = ideal / got["flowsh"].wall
        for base in ("make", "xargs", "parallel", "luigi"):
            if base in got:
                self.report.add(Row(f"W2 fan-out efficiency vs {base}", eff, "",
                                    ideal / got[base].wall, base,
                                    target=">= 0.93" if base == "make" else "",
                                    ok=eff >= 0.93 if base == "make" else None))
        first = got["flowsh, new home"]
        self.report.add(Row("W2 efficiency, first run (new home)", ideal / first.wall, "",
                            ideal / got["make"].wall, "make",
                            note="its parse cache, state and plugin scan made first"))
        # What is left once flowsh's fixed start-up (a 1-step run) is taken out.
        net = ideal / (got["flowsh"].wall - got["flowsh 1 step"].wall)
        self.report.add(Row("W2 efficiency net of start-up", net, "", ideal / got["make"].wall,
                            "make", note="ideal / (wall - wall of a 1-step flowsh run)"))
        self.report.add(Row("W2 peak RSS", got["flowsh"].maxrss_kib / MIB, "MiB"))

    # W3 ------------------------------------------------------------------------------
    def w3(self) -> None:
        reps = 5 if self.args.quick else 15
        print(f"W3: start-up of each command, median of {reps}, interleaved", file=sys.stderr)
        py = str(Path(self.flowsh).with_name("python")) if \
            Path(self.flowsh).with_name("python").exists() else sys.executable
        # A home with one recorded run, so `status` and `history` have something to read,
        # and whose caches are warm (a second start of anything is the usual one).
        env = self.env()
        chain = chain_yaml(self.work / "chain3.yaml", 3)
        ten = chain_yaml(self.work / "ten.yaml", 10)
        one = self.work / "one.yaml"
        one.write_text('name: one\nsteps:\n  - name: s\n    run: "true"\n')
        run_child([self.flowsh, "run", "-q", str(chain)], env=env)
        run_child([self.flowsh, "validate", str(ten)], env=env)
        run_child([self.flowsh, "run", "-q", str(one)], env=env)
        cands: dict[str, list[str] | Callable[[], Child]] = {
            "python -I -S -c pass": [py, "-I", "-S", "-c", "pass"],
            "python -c pass": [py, "-c", "pass"],
            # The floor of every command but --version: typer stays the CLI (issue 14).
            "python -c 'import typer'": [py, "-c", "import typer"],
            "flowsh --version": [self.flowsh, "--version"],
            "flowsh run (1 step)": [self.flowsh, "run", "-q", str(one)],
            "flowsh status": [self.flowsh, "status"],
            "flowsh history": [self.flowsh, "history"],
            "flowsh validate (10 steps)": [self.flowsh, "validate", str(ten)],
            "flowsh --help": [self.flowsh, "--help"],
        }
        if shutil.which("parallel"):
            cands["parallel ::: true"] = ["parallel", "--will-cite", ":::", "true"]
        if self.luigi is not None:
            cands["luigi, 1 task"] = self.luigi_run(1, "true", chain=False)
        # Interleaved rounds: a change in the machine's load lands on every command alike.
        samples: dict[str, list[Child]] = {k: [] for k in cands}
        for _ in range(reps):
            for k, argv in cands.items():
                c = argv() if callable(argv) else run_child(argv, env=env)
                if c.returncode != 0:
                    raise SystemExit(f"bench: W3 {k} exited {c.returncode}")
                samples[k].append(c)
        got = {k: Child(wall=statistics.median(c.wall for c in v),
                        maxrss_kib=max(c.maxrss_kib for c in v), returncode=0,
                        cpu=statistics.median(c.cpu for c in v)) for k, v in samples.items()}
        for k, c in got.items():
            print(f"  {k:28}: {c.wall * MS:6.1f} ms  cpu {c.cpu * MS:6.1f} ms  "
                  f"maxrss {c.maxrss_kib / MIB:.1f} MiB", file=sys.stderr)
        self.report.raw["w3"] = {k: {"wall_s": c.wall, "cpu_s": c.cpu,
                                     "maxrss_mib": c.maxrss_kib / MIB}
                                 for k, c in got.items()}
        floor = got["python -I -S -c pass"].wall
        typer_floor = got["python -c 'import typer'"]
        self.report.add(Row("W3 floor: python -c 'import typer'", typer_floor.wall, "s", floor,
                            "python -I -S", note=f"cpu {typer_floor.cpu * MS:.0f} ms; what "
                            "any typer command pays before its own work"))
        targets = {"flowsh --version": 0.025, "flowsh run (1 step)": 0.120,
                   "flowsh status": 0.100, "flowsh history": 0.100,
                   "flowsh validate (10 steps)": 0.100}
        for k in ("flowsh --version", "flowsh run (1 step)", "flowsh status", "flowsh history",
                  "flowsh validate (10 steps)", "flowsh --help"):
            c = got[k]
            limit = targets.get(k)
            note = f"cpu {c.cpu * MS:.0f} ms"
            if k != "flowsh --version":
                note += f"; {(c.wall - typer_floor.wall) * MS:.0f} ms over typer's import"
            if k == "flowsh run (1 step)":
                note += f"; {c.wall / floor:.1f}x the floor (target <= 11x)"
                for peer in ("parallel ::: true", "luigi, 1 task"):
                    if peer in got:
                        note += f"; {peer} {got[peer].wall * MS:.0f} ms"
            target = f"<= {limit * MS:.0f} ms" if limit else ""
            ok = c.wall <= limit if limit else None
            if k == "flowsh run (1 step)":  # issue 14: and at most 11 times the floor
                target += ", <= 11x"
                ok = bool(ok) and c.wall <= 11 * floor
            self.report.add(Row(f"W3 `{k[7:]}`", c.wall, "s", floor, "python -I -S",
                                target=target, ok=ok, note=note))

    # W4 ------------------------------------------------------------------------------
    def w4(self) -> None:
        n = 2000 if self.args.quick else 10000
        print(f"W4: validate and plan a {n}-step random DAG, cold and warm", file=sys.stderr)
        f = dag_yaml(self.work / f"dag{n}.yaml", n)
        warm_env = self.env()
        run_child([self.flowsh, "validate", str(f)], env=warm_env)  # fills its parse cache
        py = Path(self.flowsh).with_name("python")
        cands: dict[str, Callable[[], Child]] = {
            # cold: a fresh FLOWSH_HOME each time, so nothing is cached
            "validate cold": lambda: run_child([self.flowsh, "validate", str(f)],
                                               env=self.env()),
            "validate warm": lambda: run_child([self.flowsh, "validate", str(f)], env=warm_env),
            "dry-run cold": lambda: run_child([self.flowsh, "run", "--dry-run", str(f)],
                                              env=self.env()),
            "dry-run warm": lambda: run_child([self.flowsh, "run", "--dry-run", str(f)],
                                              env=warm_env),
            "yaml": lambda: run_child(
                [str(py) if py.exists() else sys.executable, "-c",
                 "import sys, yaml; yaml.load(open(sys.argv[1]), Loader=getattr(yaml, "
                 "'CSafeLoader', yaml.SafeLoader))", str(f)]),
        }
        samples: dict[str, list[Child]] = {k: [] for k in cands}
        for _ in range(self.repeats):
            for k, fn in cands.items():
                c = fn()
                if c.returncode != 0:
                    raise SystemExit(f"bench: W4 {k} exited {c.returncode}")
                samples[k].append(c)
        got = {k: Child(wall=statistics.median(c.wall for c in v),
                        maxrss_kib=max(c.maxrss_kib for c in v), returncode=0,
                        cpu=statistics.median(c.cpu for c in v)) for k, v in samples.items()}
        yaml_only = got.pop("yaml")
        for k, c in got.items():
            print(f"  {k:14}: {c.wall:.3f} s  cpu {c.cpu:.3f} s  "
                  f"maxrss {c.maxrss_kib / MIB:.1f} MiB", file=sys.stderr)
        self.report.raw["w4"] = {k: {"wall_s": c.wall, "cpu_s": c.cpu,
                                     "maxrss_mib": c.maxrss_kib / MIB}
                                 for k, c in got.items()}
        self.report.raw["w4"]["yaml_parse_only"] = {"wall_s": yaml_only.wall,
                                                    "cpu_s": yaml_only.cpu,
                                                    "maxrss_mib": yaml_only.maxrss_kib / MIB}
        for k, c in got.items():
            limit = 0.3 if k.endswith("warm") else 0.8
            self.report.add(Row(f"W4 `{k}` {n} steps", c.wall, "s", yaml_only.wall,
                                "python+yaml parse", target=f"<= {limit} s", ok=c.wall <= limit,
                                note=f"cpu {c.cpu:.3f} s"))
        peak = max(c.maxrss_kib for c in got.values()) / MIB
        self.report.add(Row("W4 peak RSS", peak, "MiB", target="<= 50 MiB", ok=peak <= 50))
        # Warm and cold apart: a cold start parses the file (from libyaml's events, without
        # the node tree `yaml.load` alone builds and peaks with: the baseline), a warm one
        # reads the cached parse.
        for kind in ("warm", "cold"):
            rss = max(c.maxrss_kib for k, c in got.items() if k.endswith(kind)) / MIB
            self.report.add(Row(f"W4 peak RSS, {kind}", rss, "MiB",
                                yaml_only.maxrss_kib / MIB, "python+yaml parse",
                                target="<= 50 MiB", ok=rss <= 50))

    # W5 ------------------------------------------------------------------------------
    def w5(self) -> None:
        n = 20_000 if self.args.quick else 100_000
        print(f"W5: `flowsh history` with {n} runs recorded", file=sys.stderr)
        env = self.env()
        home = Path(env["FLOWSH_HOME"])
        fill_history(home / "flowsh.db", n)
        empty = self.env()
        reps = 5 if self.args.quick else 10
        got = {
            "full": median_child(reps, lambda: run_child(
                [self.flowsh, "history", "-n", "20"], env=env), "W5 history"),
            "empty": median_child(reps, lambda: run_child(
                [self.flowsh, "history", "-n", "20"], env=empty), "W5 history, empty"),
        }
        self.report.raw["w5"] = {k: {"wall_s": c.wall, "maxrss_mib": c.maxrss_kib / MIB}
                                 for k, c in got.items()}
        self.report.add(Row(f"W5 `flowsh history -n 20`, {n} runs", got["full"].wall, "s",
                            got["empty"].wall, "no runs recorded", target="<= 0.15 s",
                            ok=got["full"].wall <= 0.15))

    # web -----------------------------------------------------------------------------
    def web(self) -> None:
        """`flowsh serve` over a big history: p95 latency of the dashboard and of
        /api/v1/runs over loopback (baseline: the same server with no runs), and a run's
        duration while 50 SSE clients follow it (baseline: nobody watching)."""
        try:
            import httpx  # noqa: F401
            import uvicorn  # noqa: F401
        except ImportError:
            print("Web: skipped (needs the ui extra and httpx: pip install -e '.[test]')",
                  file=sys.stderr)
            return
        n = 20_000 if self.args.quick else 100_000
        reqs = 100 if self.args.quick else 300
        print(f"Web: flowsh serve with {n} runs recorded, {reqs} requests per page",
              file=sys.stderr)
        full, empty = self.env(), self.env()
        fill_history(Path(full["FLOWSH_HOME"]) / "flowsh.db", n)
        flows = self.work / "web-flows"
        flows.mkdir(exist_ok=True)
        # 20 steps in a chain, 0.1 s each: the run's duration is mostly the steps' own.
        (flows / "watched.yaml").write_text("name: watched\nsteps:\n" + "".join(
            f"  - name: s{i}\n    run: echo line {i}; sleep 0.1\n"
            + (f"    needs: [s{i - 1}]\n" if i else "") for i in range(20)))
        pages = {"dashboard /": "/", "/api/v1/runs": "/api/v1/runs",
                 "/api/v1/runs?workflow&offset=5000":
                     "/api/v1/runs?workflow=wf3&offset=5000&limit=50"}
        raw: dict[str, Any] = {}
        with _server(self.flowsh, full, flows) as url_full, \
                _server(self.flowsh, empty, flows) as url_empty:
            for label, path in pages.items():
                got = _p95(url_full + path, reqs)
                base = _p95(url_empty + path, reqs)
                raw[label] = {"p95_ms": got * MS, "p95_empty_ms": base * MS}
                self.report.add(Row(f"web: {label} p95, {n} runs", got * MS, "ms", base * MS,
                                    "no runs", target="<= 100 ms", ok=got * MS <= 100))
            alone = _watched_run(url_empty, 0)
            watched = _watched_run(url_empty, 50)
            raw["sse"] = {"alone_s": alone, "with_50_clients_s": watched}
            self.report.add(Row("web: 20-step run followed by 50 SSE clients", watched, "s",
                                alone, "nobody watching", target="<= 1.1x",
                                ok=watched <= alone * 1.1))
        self.report.raw["web"] = raw

    # spawn ---------------------------------------------------------------------------
    def spawn(self) -> None:
        calls = 100 if self.args.quick else 300
        print(f"Spawn: per-call cost of running `true` from Python, {calls} calls",
              file=sys.stderr)
        costs = spawn_costs(calls, self.repeats)
        self.report.raw["spawn"] = {k: v * MS for k, v in costs.items()}
        base = costs["posix_spawn"]
        labels = {
            "sh": 'sh.Command("true")()',
            "subprocess_run": 'subprocess.run(["true"])',
            "popen_new_session": "Popen(start_new_session) + wait",
            "posix_spawn": "os.posix_spawn + waitpid",
        }
        for k, v in costs.items():
            self.report.add(Row(f"spawn: {labels[k]}", v * MS, "ms", base * MS,
                                "posix_spawn"))


    # export ----------------------------------------------------------------------------
    def export(self) -> None:
        """The exported script's checkpoint with a 100 KB param full of control characters
        (issue 11 item 7: the escaping was char by char, quadratic). Baseline: the same
        script with a 100-byte param."""
        size = 20_000 if self.args.quick else 100_000
        print(f"Export: a run whose checkpoint holds a {size}-byte param", file=sys.stderr)
        d = self.work / "export"
        d.mkdir(exist_ok=True)
        flow = d / "big.yaml"
        flow.write_text("name: big\nparams: {v: ''}\nsteps: [{name: s, run: 'true'}]\n")
        script = d / "big.sh"
        subprocess.run([self.flowsh, "export", str(flow), "--bash", "-o", str(script)],
                       check=True, capture_output=True)
        env = self.env()
        unit = "".join(chr(c) for c in range(1, 32)) + '"\\x'
        big = (unit * (size // len(unit) + 1))[:size]
        small = big[:100]
        got = {k: median_child(self.repeats, lambda v=v: run_child(
            ["bash", str(script), f"v={v}"], env=env), f"export {k}")
            for k, v in (("big", big), ("small", small))}
        self.report.raw["export"] = {k: {"wall_s": c.wall} for k, c in got.items()}
        self.report.add(Row(f"export: run with a {size}-byte control-char param",
                            got["big"].wall, "s", got["small"].wall, "100-byte param",
                            target="< 1 s more", ok=got["big"].wall - got["small"].wall < 1))


def compile_flowsh(flowsh: str) -> None:
    """Byte-compile the flowsh package the executable's interpreter imports, as pip does at
    install time.

    Under PYTHONDONTWRITEBYTECODE=1 (set in some CI and sandbox environments) a checkout's
    modules are otherwise compiled from source at every start: 60-100 ms of CPU that no
    installed flowsh pays, and which would swamp the start-up figures.
    """
    with open(flowsh, "rb") as fh:
        first = fh.readline()
    py = first[2:].decode().strip() if first.startswith(b"#!") else sys.executable
    where = subprocess.run(
        [py, "-c", "import os, flowsh; print(os.path.dirname(flowsh.__file__))"],
        capture_output=True, text=True).stdout.strip()
    if where and Path(where).is_dir():
        subprocess.run([py, "-m", "compileall", "-q", where], check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class CeleryCluster:
    """Real Celery workers (flowsh-celery) on this machine for the `celery` figures: Redis
    db FLOWSH_BENCH_REDIS (default 11, flushed), queues unique to this run."""

    def __init__(self, work: Path) -> None:
        import uuid

        self.redis = os.environ.get("FLOWSH_BENCH_REDIS", "redis://127.0.0.1:6379/11")
        self.work = work
        self.queue = f"bench-{uuid.uuid4().hex[:8]}"
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from tests.celery_worker import Cluster

        self.cluster = Cluster(work, broker=self.redis, backend=self.redis)

    def start(self, n: int, concurrency: int) -> None:
        from tests.celery_worker import wait_ready

        # Started together, then waited for: their start-ups overlap. WARNING: a log
        # line per task would be part of what is measured.
        first = len(self.cluster.workers)  # `n` more: a host each
        for i in range(first, first + n):
            self.cluster.start(f"host{i}", [self.queue], concurrency=concurrency,
                               ready=False, loglevel="WARNING")
        for w in self.cluster.workers[first:]:
            wait_ready(w, 120)

    def stop(self) -> None:
        self.cluster.stop()

    def env(self, base: dict[str, str]) -> dict[str, str]:
        return {**base, "FLOWSH_CELERY_BROKER": self.redis, "FLOWSH_CELERY_BACKEND": self.redis,
                "FLOWSH_CELERY_QUEUE": self.queue, "FLOWSH_LOAD_ENTRYPOINTS": "1"}


def celery_figures(bench: Bench) -> None:
    """Fan-out speed-up on 1, 2 and 4 workers (-c 4), per-step overhead over local on a
    chain of `true` steps, and fixed start-up (one `true` step)."""
    quick = bench.args.quick
    n_fan, secs = 32, 1.0
    n_chain = 50 if quick else 200
    cluster = CeleryCluster(bench.work)
    print(f"celery: fan-out of {n_fan} x sleep {secs:g} on 1/2/4 workers (-c 4); chain of "
          f"{n_chain} true; one true", file=sys.stderr)
    fan = fanout_yaml(bench.work / "cfan.yaml", n_fan, secs)
    fan.write_text(fan.read_text().replace("steps:", "concurrency: 32\nsteps:", 1))
    chain = chain_yaml(bench.work / "cchain.yaml", n_chain)
    one = chain_yaml(bench.work / "cone.yaml", 1)
    raw: dict[str, Any] = {}

    recorded: list[float] = []  # the run's own duration, as `flowsh history` shows it

    def run(flow: Path, executor: str) -> Child:
        env = cluster.env(bench.env())
        child = run_child([bench.flowsh, "run", str(flow), "--quiet", "--executor", executor],
                          env=env, cwd=str(bench.work))
        out = subprocess.run([bench.flowsh, "history", "--json", "-n", "1"], env=env,
                             capture_output=True, text=True, check=False).stdout
        with contextlib.suppress(ValueError, IndexError, KeyError, TypeError):
            recorded.append(float(json.loads(out)[0]["duration"]))
        return child

    try:
        started = 0
        walls, runs = {}, {}
        for workers in (1, 2, 4):
            cluster.start(workers - started, 4)
            started = workers
            recorded.clear()
            walls[workers] = median_child(bench.repeats, lambda: run(fan, "celery"),
                                          f"celery fan-out on {workers}").wall
            runs[workers] = statistics.median(recorded) if recorded else walls[workers]
        # Two views: the process's wall time (flowsh's own start-up included, the same on
        # any number of workers) and the run's recorded duration (first step to last).
        for label, times in (("wall", walls), ("run", runs)):
            for workers, t in times.items():
                speedup = times[1] / t
                bench.report.add(Row(
                    f"celery: fan-out {n_fan} x sleep 1 on {workers} worker(s), {label}", t, "s",
                    target=f"speed-up >= {0.9 * workers:.1f}", note=f"speed-up {speedup:.2f}",
                    ok=speedup >= 0.9 * workers - 1e-9))
        raw["fanout_wall_s"] = walls
        raw["fanout_run_s"] = runs
        cluster.stop()
        cluster.start(1, 1)
        local = median_child(bench.repeats, lambda: run(chain, "local"), "local chain").wall
        remote = median_child(bench.repeats, lambda: run(chain, "celery"), "celery chain").wall
        per_step = (remote - local) / n_chain
        bench.report.add(Row(f"celery: overhead per step over local (chain of {n_chain})",
                             per_step * MS, "ms", target="<= 10 ms", ok=per_step <= 0.010))
        local1 = median_child(bench.repeats, lambda: run(one, "local"), "local one").wall
        remote1 = median_child(bench.repeats, lambda: run(one, "celery"), "celery one").wall
        fixed = remote1 - local1 - per_step
        bench.report.add(Row("celery: fixed start-up over local (one step)", fixed * MS, "ms",
                             target="<= 300 ms", ok=fixed <= 0.3))
        raw.update(chain_local_s=local, chain_celery_s=remote, one_local_s=local1,
                   one_celery_s=remote1)
    finally:
        cluster.stop()
    bench.report.raw["celery"] = raw


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="smaller N, 1 repeat: < 1 minute")
    ap.add_argument("--repeats", type=int, default=0, help="repeats per figure (median)")
    ap.add_argument("--json-out", default="bench-results.json", help="where to write JSON")
    ap.add_argument("--flowsh", default=None, help="the flowsh executable to measure")
    ap.add_argument("--only", default="",
                    help="comma list of w1,w2,w3,w4,w5,spawn,export,web,celery,pg (celery: real "
                         "workers, needs Redis and plugins/flowsh-celery; pg: PostgreSQL state "
                         "against SQLite on the server --pg names; neither by default)")
    ap.add_argument("--pg", default="postgresql://postgres@127.0.0.1/test",
                    help="PostgreSQL for --only pg (a schema per run, dropped after)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    ap.add_argument("--luigi", default=None,
                    help="an interpreter that imports luigi, a peer in W1, W2 and W3 (default: "
                         "this one or flowsh's, when either can; none: no Luigi figures)")
    args = ap.parse_args(argv)
    if args.flowsh is None:
        here = Path(sys.executable).with_name("flowsh")
        args.flowsh = str(here) if here.exists() else shutil.which("flowsh")
    if not args.flowsh:
        ap.error("no flowsh executable found; pass --flowsh")
    args.flowsh = os.path.abspath(args.flowsh)

    version = subprocess.run([args.flowsh, "--version"], capture_output=True, text=True,
                             check=True).stdout.strip()
    compile_flowsh(args.flowsh)
    work = Path(tempfile.mkdtemp(prefix="flowsh-bench-"))
    bench = Bench(args, work)
    wanted = [w for w in args.only.split(",") if w] or [
        "w1", "w2", "w3", "w4", "w5", "spawn", "export", "web"]
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    try:
        for w in wanted:
            if w == "celery":
                celery_figures(bench)
            else:
                getattr(bench, w)()
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    meta = {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "flowsh": version,
        "quick": args.quick,
        "repeats": bench.repeats,
        "elapsed_s": round(time.perf_counter() - t0, 1),
        # Other work on the machine inflates wall times; see the CPU figures.
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }
    print()
    print(f"flowsh benchmark  {meta['date']}  {meta['cpus']} cpus  python {meta['python']}  "
          f"{version}{'  (quick)' if args.quick else ''}  load {meta['loadavg_before'][0]}"
          f" -> {meta['loadavg_after'][0]}")
    print(bench.report.table())
    Path(args.json_out).write_text(json.dumps(bench.report.json(meta), indent=2) + "\n")
    print(f"\nwrote {args.json_out} ({meta['elapsed_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
