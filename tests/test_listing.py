"""`flowsh list FILE` (flowsh/commands/listing.py), through the real CLI; and the exported
script's keeping of outputs for later selections (--only/--from/--until)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

FLOW = """
name: etl
steps:
  - name: extract
    description: |
      Fetch the day's dump.
      (second line: only in --json)
    run: 'true'
  - {name: load, needs: [transform], run: 'true'}
  - {name: transform, needs: [extract], description: Clean it., run: 'true'}
  - {name: report, needs: [], run: 'true'}
"""


def test_list_prints_steps_in_run_order(write_flow: Callable[..., Path], cli) -> None:  # type: ignore[no-untyped-def]
    path = write_flow(FLOW)
    res = cli("list", str(path))
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == [
        "STEP       NEEDS      DESCRIPTION",
        "extract    -          Fetch the day's dump.",
        "report     -",
        "transform  extract    Clean it.",
        "load       transform",
    ]


NO_FOREACH = {"foreach": None, "max_parallel": None}


def test_list_json_shape(write_flow: Callable[..., Path], cli) -> None:  # type: ignore[no-untyped-def]
    path = write_flow(FLOW)
    res = cli("list", str(path), "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == {
        "version": 1, "workflow": "etl", "file": str(path),
        "steps": [
            {"name": "extract", "needs": [],
             "description": "Fetch the day's dump.\n(second line: only in --json)\n",
             **NO_FOREACH},
            {"name": "report", "needs": [], "description": None, **NO_FOREACH},
            {"name": "transform", "needs": ["extract"], "description": "Clean it.",
             **NO_FOREACH},
            {"name": "load", "needs": ["transform"], "description": None, **NO_FOREACH},
        ]}


def test_list_shows_foreach_steps(write_flow: Callable[..., Path], cli) -> None:  # type: ignore[no-untyped-def]
    path = write_flow("""
        steps:
          - {name: sync, foreach: [eu, us], max_parallel: 1, run: 'true'}
          - {name: each, foreach: {file: regions.txt}, description: Per region., run: 'true'}
        """)
    res = cli("list", str(path))
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[1:] == [
        "sync  -      each of eu, us (max 1)",
        "each  sync   Per region.; each of file regions.txt"]
    steps = json.loads(cli("list", str(path), "--json").stdout)["steps"]
    assert steps[0]["foreach"] == ["eu", "us"] and steps[0]["max_parallel"] == 1
    assert steps[1]["foreach"] == {"file": "regions.txt"} and steps[1]["max_parallel"] is None


def test_list_of_a_bad_file_is_one_line_exit_2(write_flow: Callable[..., Path], cli) -> None:  # type: ignore[no-untyped-def]
    path = write_flow("steps:\n  - {name: a, needs: [zz], run: 'true'}\n")
    res = cli("list", str(path))
    assert res.returncode == 2
    assert len(res.stderr.strip().splitlines()) == 1 and "zz" in res.stderr


def test_script_keeps_outputs_for_selections_but_never_a_secret(
        write_flow: Callable[..., Path], tmp_path: Path, home: Path, cli) -> None:  # type: ignore[no-untyped-def]
    path = write_flow("""
        name: keep
        steps:
          - name: a
            run: |
              printf 'PLAIN=1\\nDB_PASSWORD=hunter2-s3cret\\nMULTI<<EOF\\nx\\nFLOWSH_END\\ny\\nEOF\\n' >> "$FLOWSH_OUTPUT"
          - {name: b, needs: [a], run: 'printf "%s|%s" "$PLAIN" "$MULTI" > got'}
        """)
    script = tmp_path / "keep.sh"
    assert cli("export", str(path), "--bash", "-o", str(script)).returncode == 0
    env = {"PATH": "/usr/bin:/bin", "FLOWSH_HOME": str(home)}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", str(script), "-q", *args], env=env, text=True,
                              capture_output=True, cwd=tmp_path, check=False, timeout=60)

    assert run().returncode == 0
    kept = home / "exported" / "keep" / "succeeded"
    assert sorted(p.name for p in kept.iterdir()) == ["a.env", "a.secret", "b.env"]
    for p in kept.iterdir():
        assert b"hunter2" not in p.read_bytes()
    assert oct(os.stat(kept).st_mode & 0o777) == "0o700"
    # b alone gets a's plain outputs back exactly; the secret one makes it refuse.
    (tmp_path / "got").unlink()
    res = run("--only", "b")
    assert res.returncode == 2
    assert "needs output DB_PASSWORD of 'a'" in res.stderr
    assert not (tmp_path / "got").exists()
    (kept / "a.secret").unlink()  # as if a kept no secret: the plain values come back
    assert run("--only", "b").returncode == 0
    assert (tmp_path / "got").read_text() == "1|x\nFLOWSH_END\ny"
