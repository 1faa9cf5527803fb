"""flowsh.builtin.state_sqlite: the default backend on a real SQLite file."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowsh.builtin.state_sqlite import SQLiteBackend
from flowsh.errors import StateError
from flowsh.state import SUCCEEDED
from flowsh.store import open_backend

from . import backend_cases as cases


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state.db"


@pytest.fixture
def backend(db: Path) -> Iterator[SQLiteBackend]:
    b = SQLiteBackend(f"sqlite://{db}")
    try:
        yield b
    finally:
        b.close()


def test_round_trip(backend: SQLiteBackend) -> None:
    cases.round_trip(backend)


def test_prefixes_and_missing(backend: SQLiteBackend) -> None:
    cases.prefixes_and_missing(backend)


def test_listing_and_delete(backend: SQLiteBackend) -> None:
    cases.listing(backend)


def test_heartbeat(backend: SQLiteBackend) -> None:
    cases.heartbeat(backend)


def test_url_forms_and_registration(tmp_path: Path) -> None:
    b = open_backend(f"sqlite:///{tmp_path}/a.db")
    try:
        assert isinstance(b, SQLiteBackend) and (tmp_path / "a.db").exists()
    finally:
        b.close()
    m = SQLiteBackend("sqlite:///:memory:")
    try:
        cases.round_trip(m)
    finally:
        m.close()


def test_wal_and_durable_across_processes(backend: SQLiteBackend, db: Path) -> None:
    run = cases.record("xproc")
    backend.create_run(run)
    assert sqlite3.connect(db).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    code = ("import sys; from flowsh.builtin.state_sqlite import SQLiteBackend\n"
            "from flowsh.state import SUCCEEDED\n"
            "b = SQLiteBackend('sqlite://' + sys.argv[1]); r = b.load_run('xproc')\n"
            "s = r.steps['a']; s.status = SUCCEEDED; b.save_step(r, s); b.close()")
    subprocess.run([sys.executable, "-c", code, str(db)], check=True, timeout=60)
    assert backend.load_run("xproc").steps["a"].status == SUCCEEDED


def test_corrupt_row_is_a_state_error(backend: SQLiteBackend, db: Path) -> None:
    backend.create_run(cases.record("bad1"))
    con = sqlite3.connect(db)
    con.execute("UPDATE runs SET params = '{not json' WHERE run_id = 'bad1'")
    con.commit()
    con.close()
    with pytest.raises(StateError, match="bad1"):
        backend.load_run("bad1")


def test_not_a_database(tmp_path: Path) -> None:
    p = tmp_path / "junk.db"
    p.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StateError):
        b = SQLiteBackend(f"sqlite://{p}")
        b.list_runs()


def test_call_links(backend: SQLiteBackend) -> None:
    cases.call_links(backend)


def test_database_from_before_call_links_is_migrated(db: Path) -> None:
    """A database of a flowsh without `call:` (its user_version just before the parent_run
    migration) keeps its runs readable, with no links, and takes new ones."""
    from flowsh.builtin.state_sqlite import MIGRATIONS, SCHEMA

    before = MIGRATIONS.index("ALTER TABLE runs ADD COLUMN parent_run TEXT")
    conn = sqlite3.connect(db)
    conn.executescript(SCHEMA)
    for statement in MIGRATIONS[:before]:
        conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {before}")
    conn.execute("INSERT INTO runs (run_id, workflow, params, status, started_at, step_names) "
                 "VALUES ('20261205T000000-old00001', 'w', '{}', 'succeeded', 1000.0, '[\"a\"]')")
    conn.execute("INSERT INTO steps (run_id, name, status, attempts, outputs) "
                 "VALUES ('20261205T000000-old00001', 'a', 'succeeded', 1, '{}')")
    conn.commit()
    conn.close()
    b = SQLiteBackend(f"sqlite://{db}")
    try:
        old = b.load_run("20261205T000000-old00001")
        assert old.parent_run is None and old.steps["a"].child_run is None
        cases.call_links(b)
        version = b.conn.execute("PRAGMA user_version").fetchone()[0]
        assert version == len(MIGRATIONS)
    finally:
        b.close()
