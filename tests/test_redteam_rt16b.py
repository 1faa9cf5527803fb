"""Second red team of issue 16 (slot, catch-up, deadlines, up-to-date steps). Each test
FAILED on integ at ebe2b0c (the finding it is named for, /work/wt/rt16b-findings.md).

Real `flowsh` processes, real files; the clock is driven with FLOWSH_NOW (the contract's
test hook, docs/semantics.md SLOT-*); the exported script runs under
`env -i PATH=... FLOWSH_HOME=...`. Waits poll a condition, never sleep a fixed time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import redteam_kit as kit
from tests.conftest import poll as _poll
from tests.conftest import run_cli
from tests.redteam_kit import ok as _ok

# Findings still open: strict xfails, so that a fix shows as an unexpected pass.
OPEN: frozenset[str] = frozenset()

_open_findings = kit.open_findings("rt16b", OPEN)


SLOT_FLOW = """\
name: daily
schedule: "CRON_TZ=UTC 0 2 * * *"
steps:
  - name: day
    sources: in.csv
    run: echo "$FLOWSH_SCHEDULED_TIME" >> done
"""


# --- 1. flowsh why after a scheduled run ------------------------------------------------

def test_why_after_a_scheduled_run_names_the_slot_not_a_traceback(tmp_path: Path) -> None:
    """HIGH. A step with `sources:` run once for a slot (`--scheduled` or
    `--scheduled-time`) records a `slot` entry in its fingerprint; `flowsh why FILE STEP`
    (no slot) then sees it "removed" and Change.describe() has no text for the kind
    "scheduled time": KeyError, a Python traceback (exit 1), for `--json` too. Every
    scheduled workflow's `flowsh why` crashed. Expected: exit 0, a line naming the
    scheduled time."""
    (tmp_path / "in.csv").write_text("x\n")
    flow = tmp_path / "daily.yaml"
    flow.write_text(SLOT_FLOW)
    _ok(run_cli("run", str(flow), "--scheduled-time", "2026-12-05T02:00:00Z", cwd=tmp_path))
    r = run_cli("why", str(flow), "day", cwd=tmp_path)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stdout + r.stderr
    assert "would run" in r.stdout and "scheduled time" in r.stdout, r.stdout
    r = run_cli("why", str(flow), "day", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    changes = json.loads(r.stdout)["changes"]
    assert any("scheduled time" in c["text"] for c in changes), changes


# --- 2. two ticks of one slot --------------------------------------------------------------

def test_second_tick_of_a_slot_that_succeeded_meanwhile_does_not_run_it_again(
        tmp_path: Path) -> None:
    """MEDIUM. Two schedulers fire the same slot on one host (a crontab line and `flowsh
    scheduler run`, or a crontab line installed twice), `overlap: wait` with `catchup`.
    The second tick waits for the lock, then runs the slot again although the first
    tick's run of that very slot succeeded meanwhile: CATCHUP-3 dedups the missed slots
    ("two ticks never make up a slot twice") but not the tick's own one.
    Observed: `done` holds 2026-12-05T02:00 twice. Expected: once."""
    flow = tmp_path / "ov.yaml"
    flow.write_text("""\
name: ov
schedule: "CRON_TZ=UTC 0 2 * * *"
overlap: wait
catchup: {window: 1d, policy: all}
steps:
  - name: day
    run: |
      echo "$FLOWSH_SCHEDULED_TIME" >> done
      while [ ! -e go ]; do sleep 0.05; done
""")
    env = {**os.environ, "FLOWSH_NOW": "2026-12-05T03:00:00Z"}
    cmd = [sys.executable, "-m", "flowsh", "run", str(flow), "--scheduled"]
    first = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    done = tmp_path / "done"
    try:
        # The first tick holds the lock once its first run (the missed slot) has started.
        _poll(lambda: done.exists(), "the first tick")
        second = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
    finally:
        (tmp_path / "go").touch()  # never leave a tick waiting behind a failed test
    assert first.wait(timeout=120) == 0
    out, _ = second.communicate(timeout=120)
    assert second.returncode == 0, out
    assert done.read_text().split() == ["2026-12-04T02:00:00+00:00",
                                        "2026-12-05T02:00:00+00:00"]


def test_second_tick_of_a_slot_in_the_exported_script_does_not_run_it_again(
        tmp_path: Path, home: Path) -> None:
    """The same race with the exported script (SLOT-8): its second `--scheduled` tick
    waits for the lock, then finds the slot in the last run's checkpoint and runs nothing,
    exit 0, one line."""
    flow = tmp_path / "ov.yaml"
    flow.write_text("""\
name: ov
schedule: "CRON_TZ=UTC 0 2 * * *"
overlap: wait
steps:
  - name: day
    run: |
      echo "$FLOWSH_SCHEDULED_TIME" >> done
      while [ ! -e go ]; do sleep 0.05; done
""")
    script = tmp_path / "ov.sh"
    _ok(run_cli("export", str(flow), "--bash", "-o", str(script)))
    env = {"PATH": "/usr/bin:/bin", "FLOWSH_HOME": str(home),
           "FLOWSH_NOW": "2026-12-05T03:00:00Z"}
    cmd = ["env", "-i", *(f"{k}={v}" for k, v in env.items()), "bash", str(script),
           "--scheduled"]
    first = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    done = tmp_path / "done"
    try:
        _poll(lambda: done.exists(), "the first tick")
        second = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
        # The second tick waits for the lock (its flock polls), then finds the slot done.
    finally:
        (tmp_path / "go").touch()
    assert first.wait(timeout=120) == 0
    out, _ = second.communicate(timeout=120)
    assert second.returncode == 0, out
    assert out.strip().startswith("slot 2026-12-05T02:00:00+00:00 already succeeded in run ")
    assert out.strip().endswith(": nothing to do") and len(out.splitlines()) == 1, out
    assert done.read_text().split() == ["2026-12-05T02:00:00+00:00"]


# --- 3. the exported script's hashing of a big tree ---------------------------------------

def test_script_hashes_a_tree_without_a_process_per_file(tmp_path: Path, home: Path) -> None:
    """MEDIUM (performance). The exported script hashed each `sources:` file with its own
    `$(sha256sum)` (two forks a file): a 20,000-file tree took 48-52 s per run of the
    script just to find the step up to date, against 2.4 s for `flowsh run` on the same
    tree (2 cores, shared). A `sha256sum` on PATH that counts its calls shows the cost
    without timing anything: 300 source files must not mean 300 calls.
    Expected: the step still runs once, then is up to date; then a changed file reruns it;
    and sha256sum is called a handful of times, not once a file."""
    src = tmp_path / "src"
    for d in range(3):
        (src / f"d{d}").mkdir(parents=True)
        for i in range(100):
            (src / f"d{d}" / f"f{i}.txt").write_text(f"{d} {i}\n")
    (src / "d0" / "-dash name\\back.txt").write_text("odd\n")
    flow = tmp_path / "big.yaml"
    flow.write_text("""\
name: big
steps:
  - name: a
    sources: "src/**"
    generates: out
    run: echo ran >> log; echo x > out
""")
    out = tmp_path / "big.sh"
    _ok(run_cli("export", "--bash", str(flow), "-o", str(out)))
    bindir = tmp_path / "bin"
    bindir.mkdir()
    calls = tmp_path / "calls"
    shim = bindir / "sha256sum"
    shim.write_text(f'#!/bin/bash\necho x >> {calls}\nexec /usr/bin/sha256sum "$@"\n')
    shim.chmod(0o755)
    env = {"PATH": f"{bindir}:/usr/bin:/bin", "FLOWSH_HOME": str(home)}

    def script() -> None:
        r = subprocess.run(["bash", str(out)], cwd=tmp_path, env=env, text=True,
                           capture_output=True, timeout=600, check=False)
        _ok(r)

    script()
    calls.unlink()
    script()
    assert (tmp_path / "log").read_text().split() == ["ran"]
    assert len(calls.read_text().split()) < 20, "sha256sum called once a source file"
    (src / "d0" / "-dash name\\back.txt").write_text("changed\n")
    script()
    assert (tmp_path / "log").read_text().split() == ["ran", "ran"]


# --- 4. croniter-only schedules in the exported script ------------------------------------

@pytest.mark.parametrize("expr", ["0 0 * * 5#2", "0 0 L * *", "0 0 1W * *"])
def test_script_refuses_a_schedule_it_cannot_read(tmp_path: Path, expr: str) -> None:
    """MEDIUM. `schedule: "0 0 * * 5#2"` (croniter's second Friday) is accepted; `flowsh
    run --scheduled` on 2026-12-05 stands for 2026-11-13, the exported script's
    `--scheduled` for 2026-12-04 (it reads `5#2` as every Friday): two runtimes, two slots
    for one tick, silently. `0 0 L * *` exported fine and then failed at every tick
    ("no fire time of the schedule found", exit 2). Expected: `flowsh export --bash`
    refuses such a schedule (exit 2, naming the key), as the systemd exporter does."""
    flow = tmp_path / "x.yaml"
    flow.write_text(f'name: x\nschedule: "CRON_TZ=UTC {expr}"\n'
                    "steps:\n  - name: a\n    run: 'true'\n")
    r = run_cli("export", "--bash", str(flow), "-o", str(tmp_path / "x.sh"))
    assert r.returncode == 2, r.stdout + r.stderr
    assert "schedule" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "x.sh").exists()


# --- 5. the fingerprint key as the two runtimes read it -------------------------------------

@pytest.mark.parametrize("layout", ["{k}", " {k}\r\n"])
def test_script_reads_the_key_flowsh_run_reads(tmp_path: Path, home: Path,
                                               layout: str) -> None:
    """LOW. `$FLOWSH_HOME/fingerprint-key` written without its final line break (`printf
    %s "$KEY" > key`, a secret manager's file) or with CRLF: `flowsh run` reads it (it
    strips the text), the exported script refused it ("must be a file of yours with mode
    0600 holding 64 hex characters", exit 3): `read -r` fails at an end of file without
    a line break. One key file, two verdicts. Expected: both runtimes take it."""
    (tmp_path / "in").write_text("i\n")
    flow = tmp_path / "k.yaml"
    flow.write_text('name: k\nparams: {API_TOKEN: "1234"}\nsteps:\n  - name: a\n'
                    "    sources: in\n    run: echo ran >> log\n")
    _ok(run_cli("run", str(flow), cwd=tmp_path))
    keyfile = home / "fingerprint-key"
    key = keyfile.read_text().strip()
    keyfile.write_text(layout.format(k=key), newline="")
    keyfile.chmod(0o600)
    r = run_cli("run", str(flow), cwd=tmp_path)
    _ok(r)
    assert "up to date" in r.stderr + r.stdout
    out = tmp_path / "k.sh"
    _ok(run_cli("export", "--bash", str(flow), "-o", str(out)))
    env = {"PATH": "/usr/bin:/bin", "FLOWSH_HOME": str(home), "API_TOKEN": "1234"}
    for _ in range(2):
        r = subprocess.run(["bash", str(out)], cwd=tmp_path, env=env, text=True,
                           capture_output=True, timeout=120, check=False)
        _ok(r)
    assert "up to date" in r.stdout + r.stderr
