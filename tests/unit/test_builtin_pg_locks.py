"""flowsh.builtin.pg_locks: advisory locks on the machine's real PostgreSQL (two backends
stand for two hosts; tests/test_state_postgresql.py drives them through real processes)."""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterator

import pytest

from flowsh.errors import LockHeldError
from flowsh.state import RunRecord
from flowsh.store import open_backend

psycopg = pytest.importorskip("psycopg")
SERVER = os.environ.get("FLOWSH_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def _server_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return True
    except OSError:
        return False


if not _server_up():
    if os.environ.get("CI"):
        raise RuntimeError("no PostgreSQL at 127.0.0.1:5432")
    pytest.skip("no PostgreSQL at 127.0.0.1:5432", allow_module_level=True)

from flowsh.builtin.pg_locks import advisory_key  # noqa: E402


@pytest.fixture
def url() -> Iterator[str]:
    schema = f"flowsh_unit_{uuid.uuid4().hex[:12]}"
    yield f"{SERVER}?options=-csearch_path%3D{schema}"
    with psycopg.connect(SERVER, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_advisory_key_is_stable_signed_64_bit_and_keeps_parts_apart() -> None:
    key = advisory_key("workflow", "s", "nightly")
    assert key == advisory_key("workflow", "s", "nightly")
    assert -2**63 <= key < 2**63
    assert advisory_key("workflow", "s", "nightly") != advisory_key("workflow", "sn", "ightly")
    assert advisory_key("runner", "s", "x") != advisory_key("workflow", "s", "x")


def test_overlap_skip_spans_two_backends_and_frees_on_exit(url: str) -> None:
    a, b = open_backend(url), open_backend(url)
    try:
        with a.workflow_lock("nightly", "skip", None) as held:  # type: ignore[attr-defined]
            held.note("r1")
            with pytest.raises(LockHeldError, match="r1"), \
                    b.workflow_lock("nightly", "skip", None):  # type: ignore[attr-defined]
                pass
            with pytest.raises(LockHeldError, match=r"gave up after waiting 0\.2s"), \
                    b.workflow_lock("nightly", "wait", 0.2):  # type: ignore[attr-defined]
                pass
        with b.workflow_lock("nightly", "skip", None):  # type: ignore[attr-defined]
            pass
    finally:
        a.close()
        b.close()


def test_runner_liveness_is_seen_from_another_backend_while_held(url: str) -> None:
    a, b = open_backend(url), open_backend(url)
    run = RunRecord(run_id=f"r-{uuid.uuid4().hex[:6]}", workflow="w", file=None,
                    definition_hash="h", params={})
    try:
        assert b.runner_alive(run) is False  # type: ignore[attr-defined]
        held = a.hold_runner(run.run_id)  # type: ignore[attr-defined]
        assert held is not None
        assert b.hold_runner(run.run_id) is None  # type: ignore[attr-defined]
        assert b.runner_alive(run) is True  # type: ignore[attr-defined]
        held.release()
        # The server drops a closed session's locks as its backend process ends: soon,
        # not at once.
        deadline = time.monotonic() + 15
        while b.runner_alive(run):  # type: ignore[attr-defined]
            assert time.monotonic() < deadline, "the released lock is still held"
            time.sleep(0.05)
    finally:
        a.close()
        b.close()


def _terminate(conn: object) -> None:
    pid = conn.info.backend_pid  # type: ignore[attr-defined]
    with psycopg.connect(SERVER, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s, 10000)", (pid,))


def test_pool_slots_lost_with_their_connection_are_taken_again(url: str) -> None:
    """rt15 HIGH: the pool connection is watched as the overlap lock's is: dropped by the
    server, its slots are taken again on a new connection (not only at release)."""
    a, b = open_backend(url), open_backend(url)
    try:
        slots_a, slots_b = a.pool_locks(), b.pool_locks()  # type: ignore[attr-defined]
        assert slots_a.try_lock("db", 0)
        old = slots_a.conn
        _terminate(old)
        a.locks.keep(wait=False)  # type: ignore[attr-defined]  # as the watcher does
        assert slots_a.conn is not old and not slots_a.conn.closed
        assert not slots_b.try_lock("db", 0)  # still ours
        slots_a.unlock("db", 0)
        assert slots_b.try_lock("db", 0)
        slots_a.close()
        slots_b.close()
    finally:
        a.close()
        b.close()


def test_pool_slot_taken_elsewhere_meanwhile_is_lost_for_good(url: str) -> None:
    from flowsh.errors import StateError

    a, b = open_backend(url), open_backend(url)
    try:
        slots_a, slots_b = a.pool_locks(), b.pool_locks()  # type: ignore[attr-defined]
        assert slots_a.try_lock("db", 0)
        _terminate(slots_a.conn)
        assert slots_b.try_lock("db", 0)  # another host, before `a` noticed
        with pytest.raises(StateError, match="pool slots"):
            a.locks.keep(wait=False)  # type: ignore[attr-defined]
        with pytest.raises(StateError, match="lost a lock"):
            slots_a.try_lock("db", 1)  # no new slot for a run that lost one
        slots_a.unlock("db", 0)  # a release after the loss: nothing to do, no error
        slots_a.close()
        slots_b.close()
    finally:
        a.close()
        b.close()
