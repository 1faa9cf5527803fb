"""flowsh.libstate: a library's top-level assignments, evaluated once per run and kept."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from flowsh.errors import StateError, UsageError
from flowsh.libstate import MAX_STATE_BYTES, STATE_FILE, LibraryState, evaluate, key, run_states
from flowsh.loader import load_workflow

ENV = {"PATH": "/usr/bin:/bin"}


def test_evaluate_captures_changed_variables(tmp_path: Path) -> None:
    lib = tmp_path / "lib.sh"
    lib.write_text('DEST=/default\nDB_PASSWORD=s3cret99\nfrom_env=$GIVEN\nmain() { exit 3; }\nmain\n')
    state = evaluate([str(lib)], {**ENV, "GIVEN": "g"}, tmp_path)
    assert state.values == {"DEST": "/default", "DB_PASSWORD": "s3cret99", "from_env": "g"}
    assert 'declare -- DEST="/default"' in state.text
    assert "PATH" not in state.values


def test_evaluate_failure_and_size_limit(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="failed"):
        evaluate([str(tmp_path / "missing.sh")], ENV, tmp_path)
    big = tmp_path / "big.sh"
    big.write_text(f"BIG=$(head -c {MAX_STATE_BYTES + 10} /dev/zero | tr '\\0' x)\n")
    with pytest.raises(UsageError, match="keep large data in files"):
        evaluate([str(big)], ENV, tmp_path)


def test_key() -> None:
    assert key(["a", "b"]) == "a\nb" and key(["a", "b"]) != key(["b", "a"])


def test_run_states_recorded_once_and_reused(write_flow: Callable[..., Path], tmp_path: Path) -> None:
    (tmp_path / "lib.sh").write_text("STAMP=$(date +%s%N)\n")
    wf = load_workflow(write_flow("name: w\nsource: [lib.sh]\nsteps:\n  - {name: a, run: 'true'}\n"
                                  "  - {name: b, run: 'true'}\n"))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    first = run_states(wf, run_dir, ENV, reuse=False)
    assert list(first) == [str(tmp_path / "lib.sh")]
    f = run_dir / STATE_FILE
    assert f.stat().st_mode & 0o777 == 0o600
    again = run_states(wf, run_dir, ENV, reuse=True)
    assert again == first  # a resume never evaluates again
    fresh = run_states(wf, run_dir, ENV, reuse=False)
    assert fresh[str(tmp_path / "lib.sh")].values["STAMP"] != first[str(tmp_path / "lib.sh")].values["STAMP"]


def test_no_libraries_no_state(write_flow: Callable[..., Path], tmp_path: Path) -> None:
    wf = load_workflow(write_flow("name: w\nsteps:\n  - {name: a, run: 'true'}\n"))
    assert run_states(wf, tmp_path, ENV, reuse=False) == {}
    assert not (tmp_path / STATE_FILE).exists()


def test_corrupt_state_file(write_flow: Callable[..., Path], tmp_path: Path) -> None:
    (tmp_path / "lib.sh").write_text("X=1\n")
    wf = load_workflow(write_flow("name: w\nsource: [lib.sh]\nsteps:\n  - {name: a, run: 'true'}\n"))
    (tmp_path / STATE_FILE).write_text("{not json")
    with pytest.raises(StateError, match="cannot read the run's library state"):
        run_states(wf, tmp_path, ENV, reuse=True)
    (tmp_path / STATE_FILE).write_text(json.dumps({"other": {"text": "", "values": {}}}))
    got = run_states(wf, tmp_path, ENV, reuse=True)  # a list the file lacks is evaluated
    assert got[str(tmp_path / "lib.sh")].values == {"X": "1"}
    assert set(json.loads((tmp_path / STATE_FILE).read_text())) == {"other", str(tmp_path / "lib.sh")}
    assert isinstance(got["other"], LibraryState)
    assert os.listdir(tmp_path).count(STATE_FILE) == 1
