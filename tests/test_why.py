"""`flowsh why FILE STEP` and `flowsh run --force/--force-step`, through the real CLI."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

Cli = Callable[..., subprocess.CompletedProcess[str]]

FLOW = """
    source: lib.sh
    params: {MODE: fast, DB_PASSWORD: pw-one}
    steps:
      - name: build
        run: build_it
        sources: "src/*.txt"
        generates: out.txt
      - name: plain
        run: "true"
"""


def setup(tmp_path: Path, write_flow: Callable[..., Path]) -> Path:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_text("a")
    (tmp_path / "lib.sh").write_text("h() { echo h; }\nbuild_it() { h; cat src/* > out.txt; }\n")
    return write_flow(FLOW)


def test_why_names_every_change(tmp_path: Path, write_flow: Callable[..., Path],
                                cli: Cli) -> None:
    path = setup(tmp_path, write_flow)
    res = cli("why", str(path), "build")
    assert res.returncode == 0 and "would run" in res.stdout
    assert "no successful run" in res.stdout
    assert cli("run", str(path), "-q").returncode == 0
    res = cli("why", str(path), "build")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("build: would be skipped, up to date")
    (tmp_path / "src" / "a.txt").write_text("A")
    (tmp_path / "src" / "b.txt").write_text("b")
    (tmp_path / "lib.sh").write_text("h() { echo H; }\nbuild_it() { h; cat src/* > out.txt; }\n")
    (tmp_path / "out.txt").unlink()
    res = cli("why", str(path), "build", "DB_PASSWORD=pw-two", "MODE=slow")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == "build: would run: changed since its last successful run"
    assert set(lines[1:]) == {
        "  function h changed", "  source file src/a.txt changed",
        "  source file src/b.txt added", "  variable DB_PASSWORD changed",
        "  variable MODE changed", "  generated file out.txt removed"}
    assert "pw-" not in res.stdout
    data = json.loads(cli("why", str(path), "build", "--json").stdout)
    assert data["would_run"] is True
    assert {(c["kind"], c["name"]) for c in data["changes"]} >= {("file", "src/b.txt")}
    write_flow(FLOW.replace("run: build_it", "run: build_it now"))
    assert "the command text changed" in cli("why", str(path), "build").stdout
    res = cli("why", str(path), "plain")
    assert res.returncode == 0 and "never up to date" in res.stdout


def test_unknown_step_names_exit_2_with_a_suggestion(
        tmp_path: Path, write_flow: Callable[..., Path], cli: Cli) -> None:
    path = setup(tmp_path, write_flow)
    res = cli("why", str(path), "biuld")
    assert res.returncode == 2 and "did you mean 'build'" in res.stderr
    res = cli("why", str(path), "build", "MOED=x")
    assert res.returncode == 2 and "did you mean 'MODE'" in res.stderr
    res = cli("run", str(path), "--force-step", "plain,biuld")
    assert res.returncode == 2 and "did you mean 'build'" in res.stderr
    assert not (tmp_path / "out.txt").exists()


def test_force_and_force_step(tmp_path: Path, write_flow: Callable[..., Path],
                              cli: Cli) -> None:
    path = setup(tmp_path, write_flow)
    assert cli("run", str(path), "-q").returncode == 0
    (tmp_path / "out.txt").write_text("a")  # as the step writes it
    before = (tmp_path / "out.txt").stat().st_mtime_ns
    res = cli("run", str(path))
    assert res.returncode == 0 and "build: skipped (up to date)" in res.stderr + res.stdout
    assert (tmp_path / "out.txt").stat().st_mtime_ns == before
    for args in (["--force"], ["--force-step", "build"], ["--force-step", "plain,build"]):
        res = cli("run", str(path), *args)
        assert res.returncode == 0
        assert "build: skipped" not in res.stderr + res.stdout, args
    res = cli("run", str(path), "--force-step", "plain")
    assert "build: skipped (up to date)" in res.stderr + res.stdout


def test_why_writes_nothing_in_a_fresh_home(tmp_path: Path, write_flow: Callable[..., Path],
                                            cli: Cli, flowsh_env: Path) -> None:
    """A reader makes no store and no fingerprint key (a step seeing DB_PASSWORD would
    hash it with one): `why` before any run leaves $FLOWSH_HOME without state, and a
    json:// store's directory unmade."""
    path = setup(tmp_path, write_flow)
    res = cli("why", str(path), "build")
    assert res.returncode == 0 and "no successful run" in res.stdout, res.stderr
    made = sorted(p.name for p in flowsh_env.iterdir())
    assert "flowsh.db" not in made and "fingerprint-key" not in made, made
    res = cli("why", str(path), "build", "--state", f"json://{tmp_path / 'js'}")
    assert res.returncode == 0 and not (tmp_path / "js").exists(), res.stderr
    # A run makes the key; without it, a secret cannot be compared: it counts as changed.
    assert cli("run", str(path), "-q").returncode == 0
    assert "up to date" in cli("why", str(path), "build").stdout
    (flowsh_env / "fingerprint-key").unlink()
    res = cli("why", str(path), "build")
    assert "variable DB_PASSWORD changed" in res.stdout, res.stdout + res.stderr
    assert not (flowsh_env / "fingerprint-key").exists()


def test_why_for_a_slot(tmp_path: Path, write_flow: Callable[..., Path], cli: Cli) -> None:
    """UPTODATE-4: the slot (FLOWSH_SCHEDULED_TIME, as steps see it: `Z` is written
    +00:00) is part of the fingerprint, so `why` takes it as `run` does."""
    path = setup(tmp_path, write_flow)
    assert cli("run", str(path), "-q", "--scheduled-time", "2026-12-05T02:00:00Z").returncode == 0
    res = cli("why", str(path), "build", "--scheduled-time", "2026-12-05T02:00:00+00:00")
    assert res.stdout.startswith("build: would be skipped, up to date"), res.stdout + res.stderr
    res = cli("why", str(path), "build", "--scheduled-time", "2026-12-06T02:00:00Z")
    assert "the scheduled time (FLOWSH_SCHEDULED_TIME) changed" in res.stdout, res.stdout
    res = cli("why", str(path), "build")
    assert "the scheduled time (FLOWSH_SCHEDULED_TIME) removed" in res.stdout, res.stdout
    res = cli("why", str(path), "build", "--scheduled-time", "2026-12-05T02:00:00+05:60")
    assert res.returncode == 2 and res.stderr.startswith("flowsh: error: --scheduled-time:")
    assert "Traceback" not in res.stderr
