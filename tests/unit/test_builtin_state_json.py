"""flowsh.builtin.state_json: one JSON file per run, in a real directory."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowsh.builtin.state_json import JSONBackend
from flowsh.errors import StateError, UsageError
from flowsh.state import RUNNING
from flowsh.store import open_backend

from . import backend_cases as cases


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[JSONBackend]:
    b = JSONBackend(f"json://{tmp_path / 'runs'}")
    try:
        yield b
    finally:
        b.close()


def test_round_trip(backend: JSONBackend) -> None:
    cases.round_trip(backend)


def test_prefixes_and_missing(backend: JSONBackend) -> None:
    cases.prefixes_and_missing(backend)


def test_listing_and_delete(backend: JSONBackend) -> None:
    cases.listing(backend)


def test_heartbeat(backend: JSONBackend) -> None:
    cases.heartbeat(backend)


def test_one_private_file_per_run_with_the_seeds_fields(backend: JSONBackend) -> None:
    run = cases.record("r1")
    run.steps["a"].status = RUNNING
    backend.create_run(run)
    f = backend.dir / "state_r1.json"
    assert f.stat().st_mode & 0o777 == 0o600
    assert backend.dir.stat().st_mode & 0o777 == 0o700
    data = json.loads(f.read_text())
    assert data["step"] == "a" and data["data"] == run.params and data["run_id"] == "r1"
    assert [p for p in os.listdir(backend.dir) if p.endswith(".tmp")] == []


def test_hostile_run_ids_refused(backend: JSONBackend) -> None:
    for bad in ("../x", ".hidden", "a/b"):
        with pytest.raises(UsageError, match="invalid run id"):
            backend.create_run(cases.record(bad))


def test_corrupt_file_is_a_state_error(backend: JSONBackend) -> None:
    (backend.dir / "state_bad.json").write_text("{nope")
    with pytest.raises(StateError, match=r"state_bad\.json"):
        backend.load_run("bad")


def test_registered_under_json(tmp_path: Path) -> None:
    b = open_backend(f"json://{tmp_path / 'j'}")
    try:
        assert isinstance(b, JSONBackend) and b.dir == tmp_path / "j"
    finally:
        b.close()


def test_call_links(backend: JSONBackend) -> None:
    cases.call_links(backend)
