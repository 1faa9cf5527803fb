"""A plain bash script (functions + `main "$@"`) is not a dead end (issue 18)."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowsh.loader import load_workflow
from tests.conftest import run_cli

BACKUP = """\
#!/bin/bash
set -euo pipefail
CALLS=${CALLS:-calls.txt}

log() { echo "[backup] $*"; }
check_disk() { log "disk ok"; echo check_disk >> "$CALLS"; }
function dump_db {
    log "dump"
    echo dump_db >> "$CALLS"
}
compress() { echo compress >> "$CALLS"; }
upload() { echo upload >> "$CALLS"; }   # defined, but main does not call it
prune() { echo prune >> "$CALLS"; }

main() {
    prune_first=0
    # compress is called after dump_db, whatever the file order says
    check_disk
    dump_db && compress
    if prune; then
        log "done"
    fi
}

main "$@"
"""


@pytest.mark.parametrize("command", ["run", "import"])
def test_run_and_import_on_a_plain_script_name_the_three_ways_in(
    tmp_path: Path, command: str
) -> None:
    script = tmp_path / "backup.sh"
    script.write_text(BACKUP)
    r = run_cli(command, str(script), cwd=tmp_path)
    assert r.returncode == 2
    [line] = r.stderr.splitlines()
    assert line.startswith(f"flowsh: error: {script}:1:1: no workflow array found")
    assert f"flowsh wrap -- bash {script}" in line
    assert f"flowsh init --from {script}" in line
    assert "source:" in line
    assert not (tmp_path / "calls.txt").exists()  # nothing of the script ran


def test_init_from_makes_one_step_per_function_main_calls_in_that_order(
    tmp_path: Path,
) -> None:
    (tmp_path / "backup.sh").write_text(BACKUP)
    r = run_cli("init", "--from", "backup.sh", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    wf = load_workflow(tmp_path / "backup.yaml")
    # main's order; `log` is a helper (the others call it), `upload` is never called.
    assert [s.name for s in wf.steps] == ["check_disk", "dump_db", "compress", "prune"]
    assert wf.source == ["backup.sh"]
    r = run_cli("run", "backup.yaml", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    # Each function ran once, as its own step; the script's own `main "$@"` did not run.
    assert (tmp_path / "calls.txt").read_text().split() == [
        "check_disk", "dump_db", "compress", "prune"]


def test_init_from_without_main_makes_one_step_per_function(tmp_path: Path) -> None:
    (tmp_path / "lib.sh").write_text(
        "b() { echo b >> calls.txt; }\n\nfunction a() {\n  echo a >> calls.txt\n}\n"
        "c () { echo c >> calls.txt; }\n"
    )
    r = run_cli("init", "--from", "lib.sh", "tasks", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    text = (tmp_path / "tasks.yaml").read_text()
    assert "one step per function\n# it defines (it has no `main`), in file order" in text
    assert [s.name for s in load_workflow(tmp_path / "tasks.yaml").steps] == ["b", "a", "c"]
    assert run_cli("run", "tasks.yaml", cwd=tmp_path).returncode == 0
    assert (tmp_path / "calls.txt").read_text().split() == ["b", "a", "c"]


def test_init_help_says_what_from_does() -> None:
    r = run_cli("init", "--help", env={"COLUMNS": "200"})
    text = " ".join(r.stdout.split())
    assert ("one step per function its entry point calls (`main`, or whatever function its "
            "last line calls), in that order") in text
    assert "per function it defines, when it has none" in text


def test_init_from_keeps_what_mains_statements_mean(tmp_path: Path) -> None:
    """Review of issue 18: a pipeline of functions split into steps lost its data, a
    call's arguments were dropped, a condition became unconditional."""
    (tmp_path / "etl.sh").write_text(
        "#!/bin/bash\n"
        "gen() { printf 'r1\\nr2\\n'; }\n"
        "upper() { tr a-z A-Z; }\n"
        "store() { cat > stored.txt; }\n"
        "rotate() { echo \"rotate $1\" >> calls.txt; }\n"
        "has_work() { [ -e work ]; }\n"
        "deploy() { echo deploy >> calls.txt; }\n"
        "main() {\n"
        "    cd \"$(dirname \"$0\")\"\n"
        "    gen | upper | store\n"
        "    rotate 7; rotate 30\n"
        "    if has_work; then\n"
        "        deploy\n"
        "    fi\n"
        "}\n"
        "main \"$@\"\n"
    )
    r = run_cli("init", "--from", "etl.sh", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    text = (tmp_path / "etl.yaml").read_text()
    assert '#   cd "$(dirname "$0")"' in text  # not in a step: said so
    wf = load_workflow(tmp_path / "etl.yaml")
    assert [(s.name, s.run) for s in wf.steps] == [
        ("gen", "gen | upper | store"), ("rotate", "rotate 7"), ("rotate-2", "rotate 30"),
        ("has_work", "if has_work; then\n    deploy\nfi")]
    r = run_cli("run", "etl.yaml", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "stored.txt").read_text() == "R1\nR2\n"
    # No `work`: the condition is false, deploy does not run, and that is not a failure.
    assert (tmp_path / "calls.txt").read_text() == "rotate 7\nrotate 30\n"


def test_init_from_refuses_a_binary_file(tmp_path: Path) -> None:
    (tmp_path / "tool").write_bytes(b"\x7fELF\x02\x01\x01\x00\x00main() {\n")
    r = run_cli("init", "--from", "tool", cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.splitlines() == [
        "flowsh: error: --from tool: not a shell script (binary data); "
        "for a program, use `flowsh wrap -- tool`"]
    assert not (tmp_path / "tool.yaml").exists()


def test_init_from_keeps_a_bare_call_of_a_function_others_call_too(tmp_path: Path) -> None:
    (tmp_path / "d.sh").write_text(
        "log() { echo \"[d] $*\"; }\n"
        "restart() { echo restart >> calls.txt; }\n"
        "deploy() { log deploying; echo deploy >> calls.txt; restart; }\n"
        "main() {\n  log \"start\"\n  deploy\n  restart\n}\nmain \"$@\"\n")
    assert run_cli("init", "--from", "d.sh", cwd=tmp_path).returncode == 0
    wf = load_workflow(tmp_path / "d.yaml")
    # `restart` is main's own second stage though deploy calls it too; `log "start"` is not.
    assert [s.name for s in wf.steps] == ["deploy", "restart"]
    assert '#   log "start"' in (tmp_path / "d.yaml").read_text()
    assert run_cli("run", "d.yaml", cwd=tmp_path).returncode == 0
    assert (tmp_path / "calls.txt").read_text().split() == ["deploy", "restart", "restart"]
