"""Identity (shared rule 7): two different files never share a lock, history, stats or
resume unless they declare the same explicit `name:`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from subprocess import CompletedProcess

from flowsh.loader import load_workflow

Cli = Callable[..., CompletedProcess[str]]

HOLDING = """
    {name}steps:
      - name: hold
        run: |
          touch started
          for _ in $(seq 600); do [ -e release ] && exit 0; sleep 0.1; done
          exit 9
    """


def wait_for(cond: Callable[[], bool], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@contextmanager
def holding(wf: Path) -> Iterator[subprocess.Popen[str]]:
    """A run of `wf` that holds its lock until `release` appears next to it."""
    proc = subprocess.Popen([sys.executable, "-m", "flowsh", "run", str(wf)], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=os.environ)
    try:
        wait_for(lambda: (wf.parent / "started").exists() or proc.poll() is not None)
        assert proc.poll() is None, proc.communicate()
        yield proc
    finally:
        (wf.parent / "release").touch()
        proc.communicate(timeout=120)


def two_files(tmp_path: Path, name: str = "") -> tuple[Path, Path]:
    out = []
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        path = tmp_path / d / "nightly.yaml"
        path.write_text(textwrap.dedent(HOLDING.format(name=name)))
        out.append(path)
    return out[0], out[1]


def test_two_files_with_the_same_stem_do_not_share_a_lock(tmp_path: Path, cli: Cli) -> None:
    a, b = two_files(tmp_path)
    (b.parent / "release").touch()
    with holding(a) as first:
        other = cli("run", str(b))
        assert other.returncode == 0, other.stderr
    assert first.returncode == 0
    ids = {load_workflow(a).identity, load_workflow(b).identity}
    assert len(ids) == 2 and all(i.startswith("nightly-") for i in ids)
    history = json.loads(cli("history", "--json").stdout)
    assert sorted(r["workflow"] for r in history) == sorted(ids)
    for path in (a, b):
        mine = json.loads(cli("history", str(path), "--json").stdout)
        assert [r["file"] for r in mine] == [str(path)]
        stats = cli("stats", str(path), "--json")
        assert stats.returncode == 0 and json.loads(stats.stdout)["runs"] == 1


def test_the_same_explicit_name_shares_the_lock(tmp_path: Path, cli: Cli) -> None:
    a, b = two_files(tmp_path, name="name: nightly\n    ")
    assert load_workflow(a).identity == load_workflow(b).identity == "nightly"
    with holding(a):
        other = cli("run", str(b))
        assert other.returncode == 75
        assert "'nightly' is already running" in other.stderr


def test_resume_never_continues_another_files_run(tmp_path: Path, cli: Cli) -> None:
    a, b = two_files(tmp_path)
    for path in (a, b):
        path.write_text("steps:\n  - name: s\n    run: test -e ok\n")
    assert cli("run", str(a)).returncode == 1
    (b.parent / "ok").touch()
    res = cli("run", str(b), "--resume")
    assert res.returncode == 0, res.stderr
    runs = json.loads(cli("history", "--json").stdout)
    assert len(runs) == 2  # b started its own run instead of resuming a's
    assert {r["file"] for r in runs} == {str(a), str(b)}


def test_a_run_recorded_under_the_bare_name_resumes_from_the_same_file(
    tmp_path: Path, cli: Cli,
) -> None:
    """Records made before identities carried a path hash (keyed on the stem)."""
    wf = tmp_path / "nightly.yaml"
    wf.write_text("name: nightly\nsteps:\n  - name: s\n    run: echo x >> out; test -e ok\n")
    assert cli("run", str(wf)).returncode == 1
    old = json.loads(cli("status", "--json").stdout)
    assert old["workflow"] == "nightly"
    wf.write_text("steps:\n  - name: s\n    run: echo x >> out; test -e ok\n")
    (tmp_path / "ok").touch()
    res = cli("run", str(wf), "--resume")
    assert res.returncode == 0, res.stderr
    assert json.loads(cli("status", "--json").stdout)["run_id"] == old["run_id"]
    assert len(json.loads(cli("history", "--json").stdout)) == 1
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "nightly.yaml").write_text(wf.read_text())
    (other / "ok").touch()
    assert cli("run", str(wf)).returncode == 0
    assert cli("run", str(other / "nightly.yaml"), "--resume").returncode == 0
    assert len(json.loads(cli("history", "--json").stdout)) == 3


def test_a_bare_name_points_at_the_recorded_identities(tmp_path: Path, cli: Cli) -> None:
    a, b = two_files(tmp_path)
    for path in (a, b):
        path.write_text("steps:\n  - name: s\n    run: 'true'\n")
        assert cli("run", str(path)).returncode == 0
    ids = sorted(load_workflow(p).identity for p in (a, b))
    hist = cli("history", "nightly")
    assert f"recorded by file: {', '.join(ids)}" in hist.stderr
    stats = cli("stats", "nightly")
    assert stats.returncode == 4 and f"recorded by file: {', '.join(ids)}" in stats.stderr
