"""Up-to-date steps (docs/semantics.md UPTODATE): fingerprints of real files, real bash
libraries and real runs through the engine and a real SQLite or JSON store."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from flowsh.engine import RunOptions, run_workflow
from flowsh.errors import UsageError
from flowsh.loader import load_workflow
from flowsh.state import StepRecord
from flowsh.store import open_backend
from flowsh.uptodate import (
    called,
    compare,
    file_hashes,
    fingerprint,
    force_names,
    library_functions,
    match_files,
)

FLOW = """
    source: lib.sh
    params: {{MODE: fast, API_TOKEN: tok-{secret}}}
    state: {state}
    steps:
      - name: build
        run: build_it
        sources: ["src/*.txt"]
        generates: [out.txt]
      - name: after
        run: 'echo "$X" >> after.log'
"""
LIB = """
helper() { echo helping; }
build_it() { helper; cat src/*.txt > out.txt; echo X=x1 >> "$FLOWSH_OUTPUT"; echo ran >> build.log; }
unused() { echo 1; }
"""


@pytest.fixture(params=["sqlite", "json"])
def flow(request: pytest.FixtureRequest, tmp_path: Path,
         write_flow: Callable[..., Path]) -> Path:
    url = (f"sqlite:///{tmp_path}/state.db" if request.param == "sqlite"
           else f"json:///{tmp_path}/state")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_text("a\n")
    (tmp_path / "lib.sh").write_text(LIB)
    return write_flow(FLOW.format(state=url, secret="s3cr3t-value"))


def build_runs(path: Path, *args: str, **opts: object) -> list[str]:
    """Run the workflow; the statuses of `build` and `after` (and check `after`'s input)."""
    params = dict(a.split("=", 1) for a in args)
    rec = run_workflow(load_workflow(path), RunOptions(params=params, **opts))  # type: ignore[arg-type]
    assert rec.status == "succeeded", rec.steps
    assert (path.parent / "after.log").read_text().splitlines()[-1] == "x1"  # handed on
    return [rec.steps["build"].status, rec.steps["after"].status]


def test_unchanged_is_skipped_and_each_change_runs_it_again(flow: Path) -> None:
    d = flow.parent
    assert build_runs(flow) == ["succeeded", "succeeded"]
    assert build_runs(flow) == ["skipped", "succeeded"]
    (d / "src" / "b.txt").write_text("b\n")  # a source added
    assert build_runs(flow) == ["succeeded", "succeeded"]
    assert build_runs(flow) == ["skipped", "succeeded"]
    (d / "lib.sh").write_text(LIB.replace("echo 1", "echo 2"))  # a function it never calls
    assert build_runs(flow) == ["skipped", "succeeded"]
    (d / "lib.sh").write_text(LIB.replace("helping", "helped"))  # one it calls via build_it
    assert build_runs(flow) == ["succeeded", "succeeded"]
    (d / "out.txt").unlink()  # a generated file gone
    assert build_runs(flow) == ["succeeded", "succeeded"]
    (d / "out.txt").write_text("edited")  # a generated file changed
    assert build_runs(flow) == ["succeeded", "succeeded"]
    assert build_runs(flow, "MODE=slow") == ["succeeded", "succeeded"]  # a param
    assert build_runs(flow, "MODE=slow") == ["skipped", "succeeded"]
    assert build_runs(flow, "MODE=slow", force=True) == ["succeeded", "succeeded"]
    assert build_runs(flow, "MODE=slow", force_steps={"build"}) == ["succeeded", "succeeded"]
    assert build_runs(flow, "MODE=slow", force_steps={"after"}) == ["skipped", "succeeded"]
    assert (d / "build.log").read_text().count("ran") == 8


def test_secret_values_are_hashed_not_stored(flow: Path, tmp_path: Path) -> None:
    build_runs(flow)
    rec = run_workflow(load_workflow(flow), RunOptions(params={"API_TOKEN": "tok-other"}))
    assert rec.steps["build"].status == "succeeded"  # a secret's change counts too
    stored = b"".join(p.read_bytes() for p in tmp_path.rglob("state*") if p.is_file())
    stored += b"".join(p.read_bytes() for p in (tmp_path / "state").rglob("*")
                       if p.is_file()) if (tmp_path / "state").is_dir() else b""
    assert b"s3cr3t-value" not in stored and b"tok-other" not in stored
    assert b"var:API_TOKEN" in stored  # its name is there (why names it)


def test_without_sources_never_up_to_date(tmp_path: Path,
                                          write_flow: Callable[..., Path]) -> None:
    path = write_flow("steps:\n  - {name: a, run: 'echo a >> log', generates: log}\n")
    for _ in range(2):
        rec = run_workflow(load_workflow(path), RunOptions())
        assert rec.steps["a"].status == "succeeded" and not rec.steps["a"].hashes
    assert (tmp_path / "log").read_text() == "a\na\n"


def test_sources_without_generates_up_to_date_on_inputs_alone(
        tmp_path: Path, write_flow: Callable[..., Path]) -> None:
    (tmp_path / "in.txt").write_text("1")
    path = write_flow("steps:\n  - {name: check, run: 'echo c >> log', sources: in.txt}\n")
    got = [run_workflow(load_workflow(path), RunOptions()).steps["check"].status
           for _ in range(2)]
    assert got == ["succeeded", "skipped"]


def test_a_failed_run_is_no_baseline(tmp_path: Path, write_flow: Callable[..., Path]) -> None:
    (tmp_path / "in.txt").write_text("1")
    path = write_flow("steps:\n  - {name: s, run: 'echo s >> log; [ -e ok ]', "
                      "sources: in.txt}\n")
    assert run_workflow(load_workflow(path), RunOptions()).steps["s"].status == "failed"
    (tmp_path / "ok").touch()
    assert run_workflow(load_workflow(path), RunOptions()).steps["s"].status == "succeeded"
    assert run_workflow(load_workflow(path), RunOptions()).steps["s"].status == "skipped"


def test_globs(tmp_path: Path) -> None:
    for rel in ("a.txt", "sub/b.txt", "sub/deep/c.txt", ".hidden.txt", "d.md"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(rel)
    assert match_files(["*.txt"], tmp_path) == ["a.txt"]
    assert match_files(["**/*.txt", "a.txt"], tmp_path) == [
        "a.txt", "sub/b.txt", "sub/deep/c.txt"]
    assert match_files(["sub"], tmp_path) == []  # directories are not files
    hashes = file_hashes("src:", ["*.md"], tmp_path)
    assert list(hashes) == ["src:d.md"] and len(hashes["src:d.md"]) == 64


def test_called_functions_are_transitive() -> None:
    fns = {"a": "a () { b; }", "b": "b () { c x; }", "c": "c () { :; }", "z": "z () { :; }",
           "ns::f": "ns::f () { :; }"}
    assert called("a; ns::f", fns) == ["a", "b", "c", "ns::f"]
    assert called("echo nothing", fns) == []


def test_library_functions_as_bash_prints_them(tmp_path: Path) -> None:
    lib = tmp_path / "lib.sh"
    lib.write_text("f() {   echo   one; }\nX=1\nmain() { f; }\nmain\n")
    fns = library_functions([str(lib)], {"PATH": "/usr/bin:/bin"}, tmp_path)
    assert set(fns) == {"f", "main"}
    assert "echo one" in fns["f"]  # normalised by bash, not the file's spacing


def test_compare_names_each_change(tmp_path: Path) -> None:
    (tmp_path / "gen").write_text("g")
    old = StepRecord("s", hashes={"cmd": "1", "src:a": "2", "var:X": "3", "fn:f": "4",
                                  "gen:gen": "bad", "gen:gone": "x"})
    now = {"cmd": "1", "src:a": "9", "var:X": "3", "src:new": "5"}
    got = [c.describe() for c in compare(old, now, tmp_path)]
    assert got == ["function f removed", "source file a changed", "source file new added",
                   "generated file gen changed", "generated file gone removed"]
    assert compare(None, now, tmp_path)[0].kind == "history"
    assert fingerprint(now) == fingerprint({**now, "gen:x": "y"}) != fingerprint(old.hashes)


def test_force_step_names(tmp_path: Path, write_flow: Callable[..., Path]) -> None:
    wf = load_workflow(write_flow("steps:\n  - {name: build, run: x}\n  - {name: b2, run: x}\n"))
    assert force_names(wf, ["build,b2", "b2"]) == {"build", "b2"}
    with pytest.raises(UsageError, match="did you mean 'build'"):
        force_names(wf, ["biuld"])


def test_sqlite_store_of_an_older_flowsh_is_migrated(tmp_path: Path) -> None:
    from flowsh.builtin.state_sqlite import MIGRATIONS, SCHEMA

    db = tmp_path / "old.db"
    conn = sqlite3.connect(db)
    conn.executescript(SCHEMA)
    for statement in MIGRATIONS[:-2]:
        conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) - 2}")
    conn.execute("INSERT INTO runs (run_id, workflow, params, status, started_at, step_names)"
                 " VALUES ('r1', 'w', '{}', 'succeeded', 1.0, '[\"a\"]')")
    conn.execute("INSERT INTO steps (run_id, name, status, attempts, outputs) "
                 "VALUES ('r1', 'a', 'succeeded', 1, '{}')")
    conn.commit()
    conn.close()
    backend = open_backend(f"sqlite:///{db}")
    try:
        rec = backend.load_run("r1").steps["a"]
        assert rec.fingerprint is None and rec.hashes == {}
    finally:
        backend.close()


def test_schema_and_validation_of_the_keys(tmp_path: Path, write_flow: Callable[..., Path],
                                           cli: Callable[..., object]) -> None:
    from flowsh.model import json_schema

    step = json_schema()["$defs"]["Step"]["properties"]
    for key in ("sources", "generates"):
        assert {"type": "string"} in step[key]["anyOf"], key
    wf = load_workflow(write_flow("steps:\n  - {name: a, run: x, sources: a.c, "
                                  "generates: [b.o]}\n"))
    assert wf.steps[0].sources == ["a.c"] and wf.steps[0].generates == ["b.o"]
    bad = write_flow("steps:\n  - name: a\n    run: x\n    sources: ['']\n", name="bad.yaml")
    res = cli("validate", str(bad))
    assert res.returncode == 2  # type: ignore[attr-defined]
    assert "bad.yaml:4:14: step 'a' key 'sources'" in res.stderr  # type: ignore[attr-defined]


def test_a_success_with_secret_outputs_is_no_baseline(
        tmp_path: Path, write_flow: Callable[..., Path]) -> None:
    (tmp_path / "in.txt").write_text("1")
    path = write_flow("steps:\n  - {name: a, run: 'echo API_TOKEN=t >> \"$FLOWSH_OUTPUT\"', "
                      "sources: in.txt}\n  - {name: b, run: 'echo \"$API_TOKEN\" >> got'}\n")
    for _ in range(2):
        rec = run_workflow(load_workflow(path), RunOptions())
        assert rec.steps["a"].status == "succeeded"  # the secret is not kept to hand on
    assert (tmp_path / "got").read_text() == "t\nt\n"


def test_retry_of_a_step_runs_it_even_when_up_to_date(
        tmp_path: Path, write_flow: Callable[..., Path]) -> None:
    (tmp_path / "in.txt").write_text("1")
    path = write_flow("steps:\n  - {name: a, run: 'echo a >> runs', sources: in.txt}\n")
    run_workflow(load_workflow(path), RunOptions())
    second = run_workflow(load_workflow(path), RunOptions())
    assert second.steps["a"].status == "skipped"
    again = run_workflow(load_workflow(path), RunOptions(resume=second, only={"a"}))
    assert again.steps["a"].status == "succeeded"
    assert (tmp_path / "runs").read_text() == "a\na\n"
