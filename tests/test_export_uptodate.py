"""Up-to-date steps in the exported script (UPTODATE): shellcheck clean, its own record,
script files hashed when it runs, secrets never in clear. Real scripts, real bash."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.exportkit import export_script, run_script

FLOW = """
name: utd
source: lib.sh
params: {DB_PASSWORD: null}
steps:
  - name: gen
    script: bin/gen.sh
    sources: ["in/**/*.txt"]
    generates: [out/all.txt]
  - name: lib
    run: build_it
    sources: [in/a.txt, lib.sh]
  - name: use
    run: 'echo "$N" >> used'
    needs: [gen]
"""


@pytest.fixture
def flow(tmp_path: Path) -> Path:
    (tmp_path / "in" / "deep").mkdir(parents=True)
    (tmp_path / "in" / "a.txt").write_text("a\n")
    (tmp_path / "in" / "deep" / "b.txt").write_text("b\n")
    (tmp_path / "bin").mkdir()
    gen = tmp_path / "bin" / "gen.sh"
    gen.write_text('#!/bin/bash\nmkdir -p out; cat in/a.txt in/deep/b.txt > out/all.txt; '
                   'echo gen >> runs; '
                   'echo N=7 >> "$FLOWSH_OUTPUT"\n')
    gen.chmod(0o755)
    (tmp_path / "lib.sh").write_text('build_it() { echo lib >> runs; }\n')
    path = tmp_path / "utd.yaml"
    path.write_text(FLOW)
    return path


def statuses(res: subprocess.CompletedProcess[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in res.stdout.splitlines():
        words = line.split()
        if len(words) >= 3 and words[1] in ("ok", "skipped", "FAILED"):
            out[words[2].rstrip(":")] = words[1]
    return out


@pytest.mark.parametrize("inline", [False, True])
def test_script_skips_up_to_date_steps(flow: Path, inline: bool) -> None:
    script = export_script(flow, inline=inline)
    res = subprocess.run(["shellcheck", "--severity=style", str(script)], capture_output=True,
                         text=True, check=False)
    assert res.returncode == 0, res.stdout
    run = lambda *a: run_script(script, "DB_PASSWORD=pw-first", *a)  # noqa: E731
    assert statuses(run()) == {"gen": "ok", "lib": "ok", "use": "ok"}
    assert statuses(run()) == {"gen": "skipped", "lib": "skipped", "use": "ok"}
    assert (flow.parent / "used").read_text() == "7\n7\n"  # outputs handed on
    (flow.parent / "in" / "deep" / "c.txt").write_text("c\n")  # `**` sees it
    assert statuses(run()) == {"gen": "ok", "lib": "skipped", "use": "ok"}
    # The script file itself: read where it is without --inline, embedded with it.
    (flow.parent / "bin" / "gen.sh").write_text(
        (flow.parent / "bin" / "gen.sh").read_text() + "# edited\n")
    assert statuses(run())["gen"] == ("skipped" if inline else "ok")
    res = run_script(script, "DB_PASSWORD=pw-second")
    assert statuses(res) == {"gen": "ok", "lib": "ok", "use": "ok"}
    assert statuses(run_script(script, "DB_PASSWORD=pw-second", "--force-step", "lib")) == {
        "gen": "skipped", "lib": "ok", "use": "ok"}
    res = run_script(script, "DB_PASSWORD=pw-second", "--force-step=gen,nope")
    assert res.returncode == 2 and "no step 'nope'" in res.stderr
    home = Path(os.environ["FLOWSH_HOME"])
    record = home / "exported" / "utd" / "uptodate" / "gen"
    assert sorted(p.name for p in record.iterdir()) == ["generated", "inputs", "outputs"]
    assert (record / "generated").read_text().startswith("gen:out/all.txt\t")
    assert "var:DB_PASSWORD\t" in (record / "inputs").read_text()
    kept = b"".join(p.read_bytes() for p in home.rglob("*") if p.is_file())
    assert b"pw-first" not in kept and b"pw-second" not in kept


def test_secret_outputs_are_not_kept_so_the_step_runs(tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("x")
    path = tmp_path / "s.yaml"
    path.write_text("name: sec\nsteps:\n  - name: a\n    run: 'echo API_TOKEN=t-1 >> "
                    "\"$FLOWSH_OUTPUT\"; echo a >> runs'\n    sources: in.txt\n")
    script = export_script(path)
    for _ in range(2):
        assert run_script(script).returncode == 0
    assert (tmp_path / "runs").read_text() == "a\na\n"
    home = Path(os.environ["FLOWSH_HOME"])
    assert not (home / "exported" / "sec" / "uptodate" / "a").exists()


def test_script_says_start_only_for_a_step_that_runs(tmp_path: Path) -> None:
    """As `flowsh run`: a step skipped as up to date (or by its `if`) is reported skipped,
    never "start" first; a step that runs says "start" before its end, once."""
    (tmp_path / "in").write_text("x\n")
    flow = tmp_path / "say.yaml"
    flow.write_text("name: say\nsteps:\n  - {name: a, run: 'true', sources: in}\n"
                    "  - {name: b, run: 'true', needs: [a], if: 'false'}\n"
                    "  - {name: c, run: 'true', needs: [a]}\n")
    script = export_script(flow)

    def lines() -> list[str]:
        res = run_script(script)
        assert res.returncode == 0, res.stderr
        return [line.split(" ", 1)[1] for line in res.stdout.splitlines()[1:-1]]

    assert lines()[:2] == ["start   a", "ok      a"]
    second = lines()
    assert second[0] == "skipped a: up to date"
    assert "skipped b: condition false" in second and "start   b" not in second
    assert second.count("start   c") == 1
    assert second.index("start   c") < second.index("ok      c")
