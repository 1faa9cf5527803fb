"""`foreach:` end to end (docs/semantics.md FOREACH), with real processes: the runner
killed with SIGKILL mid-fan-out and `flowsh resume` running only the items that did not
succeed, over the recorded list; a failed item and its resume; status and the report show
the items. What ran is read from a trace file every item appends to."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

from tests.conftest import poll as _poll

FLOWSH = [sys.executable, "-m", "flowsh"]


def _flowsh(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FLOWSH, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, check=False)


def _trace(path: Path) -> Counter[str]:
    return Counter(path.read_text().splitlines()) if path.exists() else Counter()


def _recorded(cwd: Path, names: list[str]) -> bool:
    res = _flowsh("status", "--json", cwd=cwd)
    if res.returncode != 0:
        return False
    steps = json.loads(res.stdout)["steps"]
    return all(steps.get(n, {}).get("status") == "succeeded" for n in names)


def _run_id(home: Path) -> str:
    (run,) = [p.name for p in (home / "runs").iterdir()]
    return run


def test_kill_9_mid_fan_out_then_resume_runs_only_unfinished_items(
        tmp_path: Path, home: Path) -> None:
    # c hangs on its first attempt; a, b, d, e finish around it (two at a time). The list
    # comes from a file that changes before the resume: the recorded list must be used.
    (tmp_path / "items.txt").write_text("a\nb\nc\nd\ne\n")
    item = ('echo "start $ITEM" >> trace; '
            'if [ "$ITEM" = c ] && [ "$FLOWSH_ATTEMPT" = 1 ]; then sleep 600; fi; '
            'echo "end $ITEM" >> trace; echo "DONE=$ITEM" >> "$FLOWSH_OUTPUT"')
    (tmp_path / "flow.yaml").write_text(
        "steps:\n"
        f"  - {{name: sync, foreach: {{file: items.txt}}, max_parallel: 2, run: {json.dumps(item)}}}\n"
        "  - {name: after, run: 'printf %s \"$DONE\" > after.out'}\n")
    trace = tmp_path / "trace"
    runner = subprocess.Popen([*FLOWSH, "run", "flow.yaml", "--quiet"], cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # Killed once the store has a, b, d and e succeeded: an item that ended but was
        # not yet recorded runs again on resume (at least once, docs/state.md).
        _poll(lambda: {"end a", "end b", "end d", "end e", "start c"} <= set(_trace(trace))
              and _recorded(tmp_path, ["sync[a]", "sync[b]", "sync[d]", "sync[e]"]),
              "a, b, d and e to end and be recorded while c hangs")
        os.kill(runner.pid, signal.SIGKILL)
        runner.wait(timeout=30)
    finally:
        if runner.poll() is None:
            runner.kill()
    (tmp_path / "items.txt").write_text("a\nb\nc\nd\ne\nf\n")
    status = _flowsh("status", "--json", cwd=tmp_path)
    rec = json.loads(status.stdout)
    assert rec["status"] == "crashed"
    assert rec["steps"]["sync[c]"]["status"] == "interrupted"
    assert rec["steps"]["sync[d]"]["status"] == "succeeded"

    res = _flowsh("resume", _run_id(home), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "still running" in res.stderr  # the hanging c of the dead runner was stopped
    got = _trace(trace)
    assert got == Counter({"start a": 1, "end a": 1, "start b": 1, "end b": 1,
                           "start c": 2, "end c": 1, "start d": 1, "end d": 1,
                           "start e": 1, "end e": 1}), got
    # The outputs of the items kept from before the crash reach downstream, in item order.
    assert (tmp_path / "after.out").read_text() == "a\nb\nc\nd\ne"
    rec = json.loads(_flowsh("status", "--json", cwd=tmp_path).stdout)
    assert rec["steps"]["sync"]["items"] == ["a", "b", "c", "d", "e"]
    assert rec["steps"]["sync[c]"]["attempts"] == 2
    assert rec["steps"]["sync[a]"]["attempts"] == 1
    assert "sync[f]" not in rec["steps"]


def test_failed_item_resume_reruns_it_alone_and_status_lists_items(
        tmp_path: Path, home: Path) -> None:
    item = 'echo "$ITEM" >> trace; [ "$ITEM" != us ] || [ -e fixed ]'
    (tmp_path / "flow.yaml").write_text(
        "concurrency: 4\n"
        "steps:\n"
        f"  - {{name: sync, foreach: [eu, us, ap], run: {json.dumps(item)}}}\n")
    first = _flowsh("run", "flow.yaml", cwd=tmp_path)
    assert first.returncode == 1
    assert "sync: failed" in first.stderr and "1 of 3 items failed: sync[us]" in first.stderr
    table = _flowsh("status", cwd=tmp_path).stdout
    rows = [line.split()[0] for line in table.splitlines()[6:] if line.strip()]
    assert rows[:4] == ["sync", "sync[eu]", "sync[us]", "sync[ap]"], table
    (tmp_path / "fixed").touch()
    again = _flowsh("resume", _run_id(home), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert _trace(tmp_path / "trace") == Counter({"eu": 1, "us": 2, "ap": 1})
    report = _flowsh("report", _run_id(home), "-o", str(tmp_path / "r.html"), cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    html = (tmp_path / "r.html").read_text()
    assert "sync[us]" in html and "sync[ap]" in html


def test_an_item_holding_a_secret_fails_the_step_and_is_recorded_nowhere(
        tmp_path: Path, home: Path) -> None:
    (tmp_path / "flow.yaml").write_text(
        "params: {API_KEY: s3cr3t-value}\n"
        "steps:\n"
        "  - {name: up, run: 'printf \"L<<E\\nok\\n%s\\nE\\n\" \"$API_KEY\" >> \"$FLOWSH_OUTPUT\"'}\n"
        "  - {name: each, foreach: {output: L}, run: 'touch ran'}\n")
    res = _flowsh("run", "flow.yaml", cwd=tmp_path)
    assert res.returncode == 1
    assert "an item holds a secret's value" in res.stderr
    assert not (tmp_path / "ran").exists()
    rec = _flowsh("status", "--json", cwd=tmp_path).stdout
    assert "s3cr3t-value" not in rec and '"items": null' in rec


def test_retry_of_the_step_runs_every_recorded_item_again(tmp_path: Path, home: Path) -> None:
    (tmp_path / "items.txt").write_text("a\nb\n")
    (tmp_path / "flow.yaml").write_text(
        "steps:\n  - {name: s, foreach: {file: items.txt}, run: 'echo $ITEM >> trace'}\n")
    assert _flowsh("run", "flow.yaml", cwd=tmp_path).returncode == 0
    (tmp_path / "items.txt").write_text("z\n")
    res = _flowsh("retry", _run_id(home), "--step", "s", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert _trace(tmp_path / "trace") == Counter({"a": 2, "b": 2})


def _checkpoint(home: Path) -> dict[str, object] | None:
    """The exported script's checkpoint, or None while it has none (it is renamed into
    place whole, so a read never sees half of one)."""
    found = list((home / "exported").glob("*/state_*.json"))
    return json.loads(found[0].read_text()) if found else None


def _script_recorded(home: Path, names: list[str]) -> bool:
    cp = _checkpoint(home)
    if cp is None:
        return False
    steps = cp["steps"]
    assert isinstance(steps, dict)
    instances = steps["sync"].get("instances", {})
    return all(instances.get(n) == "succeeded" for n in names)


def test_exported_script_killed_mid_fan_out_resumes_only_unfinished_items(
        tmp_path: Path, home: Path) -> None:
    # FOREACH-10: the script records the items in its checkpoint; killed with SIGKILL while
    # c hangs, `--resume` stops the c it left running and runs c alone, over the recorded
    # list (the file changed since).
    (tmp_path / "items.txt").write_text("a\nb\nc\nd\ne\n")
    item = ('echo "start $ITEM" >> trace; '
            'if [ "$ITEM" = c ] && [ "$FLOWSH_ATTEMPT" = 1 ]; then sleep 600; fi; '
            'echo "end $ITEM" >> trace; echo "DONE=$ITEM" >> "$FLOWSH_OUTPUT"')
    (tmp_path / "flow.yaml").write_text(
        "steps:\n"
        f"  - {{name: sync, foreach: {{file: items.txt}}, max_parallel: 2, run: {json.dumps(item)}}}\n"
        "  - {name: after, run: 'printf %s \"$DONE\" > after.out'}\n")
    res = _flowsh("export", "--bash", "flow.yaml", "-o", "flow.sh", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    trace = tmp_path / "trace"
    runner = subprocess.Popen(["bash", "flow.sh", "--quiet"], cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _poll(lambda: {"end a", "end b", "end d", "end e", "start c"} <= set(_trace(trace))
              and _script_recorded(home, ["sync[a]", "sync[b]", "sync[d]", "sync[e]"]),
              "a, b, d and e to end and be checkpointed while c hangs")
        os.kill(runner.pid, signal.SIGKILL)
        runner.wait(timeout=30)
    finally:
        if runner.poll() is None:
            runner.kill()
    (tmp_path / "items.txt").write_text("a\nb\nc\nd\ne\nf\n")
    cp = _checkpoint(home)
    assert cp is not None and cp["status"] == "running"
    sync = cp["steps"]["sync"]  # type: ignore[index]
    assert sync["items"] == ["a", "b", "c", "d", "e"]
    assert sync["instances"]["sync[c]"] == "running"

    res = subprocess.run(["bash", "flow.sh", "--resume"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "crashed (its runner is gone): stopped what it left running" in res.stdout
    got = _trace(trace)
    assert got == Counter({"start a": 1, "end a": 1, "start b": 1, "end b": 1,
                           "start c": 2, "end c": 1, "start d": 1, "end d": 1,
                           "start e": 1, "end e": 1}), got
    # The outputs of the items kept from before the kill reach downstream, in item order.
    assert (tmp_path / "after.out").read_text() == "a\nb\nc\nd\ne"
    cp = _checkpoint(home)
    assert cp is not None and cp["status"] == "succeeded"
    sync = cp["steps"]["sync"]  # type: ignore[index]
    assert sync["items"] == ["a", "b", "c", "d", "e"]
    assert set(sync["instances"].values()) == {"succeeded"}
    assert "sync[f]" not in sync["instances"]
