#!/usr/bin/env python3
"""Trust under faults (issue 11): kill -9 trials, an injection fuzz and the orphan matrix.

Not part of the test suite (it takes minutes). Run from the repository root:

    .venv/bin/python scripts/torture.py --crash 100 --fuzz 10000
    .venv/bin/python scripts/torture.py --only orphans

Runtimes: `flowsh run` with SQLite and JSON state, `flowsh wrap` (orphans only) and the
script `flowsh export --bash` writes. Prints one table: trials and violations per check.

* crash: a parallel DAG of 6 steps, `kill -9` of the runner at a random moment, then resume
  (`flowsh run --resume` / `./flow.sh --resume`, 3 tries) until it ends. Violations: the run
  does not complete; a step recorded succeeded before the kill runs again; two executions
  of one step at once (each step holds an flock); a process of the trial left running.
* fuzz: N hostile values (shell metacharacters, command substitutions aimed at a canary
  file, \\r, \\n, quotes, non-UTF-8 bytes) as params and as outputs; each must reach a later
  step byte for byte, and the canary must never appear.
* orphans: a step starting 4 kinds of descendant (plain child, background grandchild,
  setsid, double fork), ended by its timeout, SIGTERM or SIGINT to the runner; survivors
  counted per kind.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

PY = sys.executable
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Tally:
    trials: int = 0
    violations: int = 0
    notes: dict[str, int] = field(default_factory=dict)

    def bad(self, what: str) -> None:
        self.violations += 1
        self.notes[what] = self.notes.get(what, 0) + 1


def flowsh(*args: str, env: dict[str, str], cwd: Path, timeout: float = 300
           ) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([PY, "-m", "flowsh", *args], env=env, cwd=cwd, capture_output=True,
                          timeout=timeout, check=False)


def tagged(marker: str) -> list[int]:
    """Live (non-zombie) processes whose environment holds TORTURE_TRIAL=marker."""
    needle = f"TORTURE_TRIAL={marker}".encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            env = Path(f"/proc/{name}/environ").read_bytes()
            state = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if needle in env.split(b"\0") and state != "Z":
            found.append(int(name))
    return found


def sweep(marker: str) -> int:
    """Kill what a trial left; return how many there were (after a moment to die)."""
    end = time.monotonic() + 3
    left = tagged(marker)
    while left and time.monotonic() < end:
        time.sleep(0.1)
        left = tagged(marker)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return len(left)


# -- crash ---------------------------------------------------------------------------------

STEP = ('exec 9>"locks/$FLOWSH_STEP"; flock -n 9 || echo "$FLOWSH_STEP" >> concurrent; '
        'echo start >> "ran/$FLOWSH_STEP"; sleep 0.$((RANDOM % 6)); '
        'echo end >> "ran/$FLOWSH_STEP"')
DAG = {"a": [], "b": ["a"], "c": ["a"], "d": ["a"], "e": ["b", "c"], "f": ["d", "e"]}


def crash_flow(name: str) -> str:
    lines = [f"name: {name}", "concurrency: 4", "kill_grace: 1s", "steps:"]
    for step, needs in DAG.items():
        lines.append(f"  - name: {step}\n    needs: {json.dumps(needs)}\n"
                     f"    run: {json.dumps(STEP)}")
    return "\n".join(lines) + "\n"


def succeeded_before(runtime: str, home: Path, env: dict[str, str], work: Path,
                     name: str) -> tuple[str, set[str]]:
    """The killed run's status ("" when none was recorded) and its succeeded steps."""
    try:
        if runtime == "script":
            path = home / "exported" / name / f"state_{name}.json"
            data = json.loads(path.read_text())
        else:
            data = json.loads(flowsh("status", "--json", env=env, cwd=work).stdout)
        steps = data["steps"]
    except (OSError, ValueError, KeyError, TypeError):
        return "", set()
    done = {s for s, rec in steps.items() if rec.get("status") == "succeeded"}
    return str(data.get("status", "")), done


def crash_trial(runtime: str, n: int, tally: Tally, rng: random.Random) -> None:
    with tempfile.TemporaryDirectory(prefix="torture-crash-") as tmp:
        work, home = Path(tmp) / "w", Path(tmp) / "home"
        for d in (work / "ran", work / "locks"):
            d.mkdir(parents=True)
        marker = f"crash-{runtime}-{n}-{os.getpid()}"
        env = {**os.environ, "FLOWSH_HOME": str(home), "TORTURE_TRIAL": marker,
               "FLOWSH_LOAD_ENTRYPOINTS": "0"}
        env.pop("FLOWSH_STATE", None)
        if runtime == "json":
            env["FLOWSH_STATE"] = f"json://{home / 'state'}"
        name = "torture"
        (work / "flow.yaml").write_text(crash_flow(name))
        if runtime == "script":
            res = flowsh("export", "--bash", "flow.yaml", "-o", "flow.sh", env=env, cwd=work)
            if res.returncode != 0:
                tally.bad("export failed")
                return
            argv = [str(work / "flow.sh")]
        else:
            argv = [PY, "-m", "flowsh", "run", "-q", "flow.yaml"]
        proc = subprocess.Popen(argv, env=env, cwd=work, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.1, 1.8))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        status, done = succeeded_before(runtime, home, env, work, name)
        if status == "succeeded":
            # Finished before the kill: --resume has nothing to continue and starts afresh.
            tally.notes["finished before the kill, redrawn"] = \
                tally.notes.get("finished before the kill, redrawn", 0) + 1
            sweep(marker)
            return
        tally.trials += 1  # a trial is a run killed mid-way
        counts = {s: _starts(work, s) for s in DAG}
        resume = [*argv, "--resume"]
        ok = False
        for _ in range(3):
            res = subprocess.run(resume, env=env, cwd=work, capture_output=True, timeout=300,
                                 check=False)
            if res.returncode == 0:
                ok = True
                break
            time.sleep(0.5)
        if not ok:
            tally.bad(f"no completion (last exit {res.returncode})")
        for s in done:
            if _starts(work, s) > counts[s]:
                tally.bad("succeeded step ran again")
        if (work / "concurrent").exists():
            tally.bad("a step ran twice at once")
        if ok and any(not _ended(work, s) for s in DAG):
            tally.bad("a step never completed")
        if sweep(marker):
            tally.bad("process left running")


def _starts(work: Path, step: str) -> int:
    try:
        return (work / "ran" / step).read_text().count("start")
    except FileNotFoundError:
        return 0


def _ended(work: Path, step: str) -> bool:
    try:
        return "end" in (work / "ran" / step).read_text()
    except FileNotFoundError:
        return False


# -- fuzz ----------------------------------------------------------------------------------

def hostile(rng: random.Random, canary: Path) -> bytes:
    c = str(canary).encode()
    attacks = [
        b"$(touch " + c + b")", b"`touch " + c + b"`", b"; touch " + c, b"| touch " + c,
        b"&& touch " + c, b"'$(touch " + c + b")'", b'"$(touch ' + c + b')"',
        b"\rPATH=/nonexistent", b"\nBASH_ENV=" + c, b"${IFS}", b"$'\\x41'", b"%s%n",
        b"\\", b"'", b'"', b"\xff\xfe", b"\xc3\x28", b"=", b"<<EOF", b"\t", b" ",
        b"*", b"?", b"[a]", b"!!", b"#", b"~", b"$0", b"$$",
    ]
    parts = [rng.choice(attacks) for _ in range(rng.randint(1, 4))]
    parts.append(bytes(rng.randint(1, 255) for _ in range(rng.randint(0, 12))))
    rng.shuffle(parts)
    return b"".join(parts)


def fuzz_batch(runtime: str, values: list[bytes], canary: Path, tally: Tally) -> None:
    """One run: values as params P0..Pn and as outputs O0..On (heredoc form, any \\n);
    a later step writes each as it sees it."""
    with tempfile.TemporaryDirectory(prefix="torture-fuzz-") as tmp:
        work, home = Path(tmp) / "w", Path(tmp) / "home"
        (work / "got").mkdir(parents=True)
        env = {**os.environ, "FLOWSH_HOME": str(home), "FLOWSH_LOAD_ENTRYPOINTS": "0"}
        env.pop("FLOWSH_STATE", None)
        src = bytearray()
        for i, v in enumerate(values):
            delim = b"EOF_" + os.urandom(8).hex().encode()
            src += b"O%d<<%s\n%s\n%s\n" % (i, delim, v, delim)
        (work / "src").write_bytes(bytes(src))
        n = len(values)
        params = "\n".join(f"  P{i}: ''" for i in range(n))
        (work / "flow.yaml").write_text(
            f"name: fuzz\nparams:\n{params}\nsteps:\n"
            "  - {name: produce, run: 'cat src >> \"$FLOWSH_OUTPUT\"'}\n"
            "  - name: consume\n    needs: [produce]\n    run: |\n"
            f"      for i in $(seq 0 {n - 1}); do p=P$i; o=O$i\n"
            '        printf %s "${!p}" > "got/p$i"; printf %s "${!o}" > "got/o$i"; done\n')
        args = [os.fsdecode(b"P%d=%s" % (i, v.replace(b"\0", b""))) for i, v in
                enumerate(values)]
        if runtime == "script":
            res = flowsh("export", "--bash", "flow.yaml", "-o", "flow.sh", env=env, cwd=work)
            if res.returncode != 0:
                tally.bad("export failed")
                return
            argv = [str(work / "flow.sh"), *args]
        else:
            argv = [PY, "-m", "flowsh", "run", "-q", "flow.yaml", *args]
        res = subprocess.run(argv, env=env, cwd=work, capture_output=True, timeout=600,
                             check=False)
        tally.trials += 2 * n
        if res.returncode != 0:
            tally.bad(f"run failed (exit {res.returncode})")
            return
        for i, v in enumerate(values):
            for kind in ("p", "o"):
                try:
                    got = (work / "got" / f"{kind}{i}").read_bytes()
                except FileNotFoundError:
                    got = None
                if got != v:
                    tally.bad(f"{'param' if kind == 'p' else 'output'} altered")
        if canary.exists():
            tally.bad("canary created (code executed)")
            canary.unlink()


# -- orphans -------------------------------------------------------------------------------

KINDS = ("plain", "grandchild", "setsid", "doublefork")
_ONE = "bash -c 'echo $$ > pids/{k}.t; mv pids/{k}.t pids/{k}; exec sleep 300'"
SPAWN = "\n".join([
    _ONE.format(k="plain") + " &",
    "( " + _ONE.format(k="grandchild") + " & wait ) &",
    "setsid " + _ONE.format(k="setsid") + " &",
    "( setsid " + _ONE.format(k="doublefork") + " & )",
    "while [ \"$(ls pids | grep -vc '\\.t$')\" -lt 4 ]; do sleep 0.02; done",
    "sleep 300",
]) + "\n"


def orphan_trial(runtime: str, ending: str, tally: Tally) -> None:
    with tempfile.TemporaryDirectory(prefix="torture-orphan-") as tmp:
        work, home = Path(tmp) / "w", Path(tmp) / "home"
        (work / "pids").mkdir(parents=True)
        env = {**os.environ, "FLOWSH_HOME": str(home), "FLOWSH_LOAD_ENTRYPOINTS": "0"}
        env.pop("FLOWSH_STATE", None)
        (work / "step.sh").write_text(SPAWN)
        timeout = "\n    timeout: 2s" if ending == "timeout" else ""
        (work / "flow.yaml").write_text(
            f"name: orphans\nkill_grace: 10s\nsteps:\n  - name: spawn\n"
            f"    run: bash step.sh{timeout}\n")
        if runtime == "wrap":
            extra = ["--timeout", "2s"] if ending == "timeout" else []
            argv = [PY, "-m", "flowsh", "wrap", *extra, "--kill-grace", "10s", "--", "bash",
                    str(work / "step.sh")]
        elif runtime == "script":
            if flowsh("export", "--bash", "flow.yaml", "-o", "flow.sh", env=env,
                      cwd=work).returncode != 0:
                tally.bad("export failed")
                return
            argv = [str(work / "flow.sh")]
        else:
            argv = [PY, "-m", "flowsh", "run", "flow.yaml"]
        proc = subprocess.Popen(argv, env=env, cwd=work, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        end = time.monotonic() + 60
        while len([p for p in (work / "pids").iterdir() if p.suffix != ".t"]) < 4:
            if time.monotonic() > end or proc.poll() is not None:
                break
            time.sleep(0.02)
        if ending in ("TERM", "INT"):
            proc.send_signal(signal.SIGTERM if ending == "TERM" else signal.SIGINT)
        t0 = time.monotonic()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            tally.bad("runner did not exit")
            proc.kill()
            proc.wait()
        if time.monotonic() - t0 > 8:
            tally.bad("runner waited on a pipe")
        for kind in KINDS:
            tally.trials += 1
            f = work / "pids" / kind
            if not f.exists():
                tally.bad(f"{kind} never started")
                continue
            pid = int(f.read_text())
            deadline = time.monotonic() + 3
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _alive(pid):
                tally.bad(f"{kind} survived")
                with contextlib.suppress(OSError):
                    if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"sleep\x00"):
                        os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


# -- main ----------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--crash", type=int, default=100, help="kill -9 trials per runtime")
    ap.add_argument("--fuzz", type=int, default=10000, help="fuzzed values per runtime")
    ap.add_argument("--batch", type=int, default=250, help="values per fuzz run")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--only", choices=["crash", "fuzz", "orphans"], action="append")
    ap.add_argument("--runtimes", default="sqlite,json,script,wrap",
                    help="comma-separated subset of sqlite,json,script,wrap")
    opts = ap.parse_args()
    seed = opts.seed if opts.seed is not None else random.SystemRandom().randrange(1 << 30)
    rng = random.Random(seed)
    only = set(opts.only or ["crash", "fuzz", "orphans"])
    runtimes = set(opts.runtimes.split(","))
    if not shutil.which("flock"):
        print("torture: needs flock(1) (util-linux)", file=sys.stderr)
        return 2
    os.chdir(ROOT)
    rows: list[tuple[str, str, Tally]] = []
    started = time.monotonic()
    if "crash" in only:
        for rt in ("sqlite", "json", "script"):
            if rt not in runtimes:
                continue
            tally = Tally()
            # N runs killed mid-way (one that finished first is redrawn), at most 3N tries.
            for n in range(3 * opts.crash):
                if tally.trials >= opts.crash:
                    break
                crash_trial(rt, n, tally, rng)
            rows.append(("crash (kill -9, resume)", rt, tally))
    if "fuzz" in only:
        for rt in ("sqlite", "script"):
            if rt not in runtimes:
                continue
            tally = Tally()
            with tempfile.TemporaryDirectory(prefix="torture-canary-") as cdir:
                canary = Path(cdir) / "canary"
                left = opts.fuzz
                while left > 0:
                    n = min(opts.batch, left)
                    fuzz_batch(rt, [hostile(rng, canary) for _ in range(n)], canary, tally)
                    left -= n
            rows.append(("fuzz (params+outputs)", "run" if rt == "sqlite" else rt, tally))
    if "orphans" in only:
        for rt in ("run", "wrap", "script"):
            if (rt == "run" and "sqlite" not in runtimes) or (rt != "run" and rt not in runtimes):
                continue
            tally = Tally()
            for ending in ("timeout", "TERM", "INT"):
                orphan_trial(rt, ending, tally)
            rows.append(("orphans (4 kinds x timeout/TERM/INT)", rt, tally))
    print(f"\nscripts/torture.py  seed={seed}  took {time.monotonic() - started:.0f}s")
    print(f"{'check':40} {'runtime':8} {'trials':>7} {'violations':>10}  details")
    for check, rt, t in rows:
        details = "; ".join(f"{k}: {v}" for k, v in sorted(t.notes.items()))
        print(f"{check:40} {rt:8} {t.trials:7d} {t.violations:10d}  {details}")
    return 1 if any(t.violations for _, _, t in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
