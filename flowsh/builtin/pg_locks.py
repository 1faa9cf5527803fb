"""PostgreSQL advisory locks for the `postgresql://` state backend (flowsh.lock's
LockingBackend): the overlap lock and each run's liveness lock, every one a session-level
lock on a connection of its own held for the run, so the server drops it the moment the
holder's connection goes, whatever killed it (docs/distributed.md).
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from flowsh.errors import LockHeldError, StateError
from flowsh.lock import WorkflowLock
from flowsh.plugins import warn
from flowsh.state import RunRecord

if TYPE_CHECKING:
    import psycopg

    from flowsh.builtin.state_postgresql import PostgresBackend

# A coordinator whose host vanishes (power, network) leaves no FIN: the server finds its
# lock connections dead by TCP keepalive, after idle + interval * count seconds (~20 s).
# idle_session_timeout off: a server-wide setting must not drop a lock held for a long run.
# The lock connections are watched this often (and at once when one turns readable: a
# termination's FATAL, a reset): a lock lost and not taken back again at once stops the
# run's steps within about this long, before another host can start them again.
WATCH_EVERY = 0.5

# How long a slot's holder row must name a run seen dead before another host takes the
# slot: a server that drops every session of a runner at once (a terminate-all, a pooler's
# reset) frees its liveness lock with its slots, and the run reads dead until its watcher
# (at once, or within WATCH_EVERY) has taken its locks back or stopped its steps.
DEAD_GRACE = 5.0

# How long a holder taking its pool slots back on a new connection waits for a waiting
# host's fence to let one go (a few round trips, on a loaded host more): _HeldSlots.reclaim.
RECLAIM_FOR = 3.0

LOCK_SESSION = ("SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 3; "
                "SET tcp_keepalives_count = 3; SET idle_session_timeout = 0")


def advisory_key(*parts: str) -> int:
    """A stable signed 64-bit advisory-lock key (Python's hash() differs per process)."""
    # The registry imports this module for every run, PostgreSQL or not: no hashlib here
    # (OpenSSL, ~2 ms of every start).
    from flowsh.digest import sha256

    digest = sha256("\0".join(("flowsh", *parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class PgLocks:
    """The advisory locks one backend's process holds, and how it takes them."""

    def __init__(self, backend: PostgresBackend) -> None:
        self.b = backend
        self.held: list[_HeldLock] = []  # watched by a thread while the run lives
        self._mu = threading.RLock()  # keep() runs on the watcher and the main thread
        self._wakes: list[Callable[[], None]] = []
        self._watcher: threading.Thread | None = None
        self.lost: StateError | None = None
        self.run_id: str | None = None  # the run whose liveness lock this process holds

    def _lock_key(self, kind: str, name: str) -> int:
        # The schema is part of the key: advisory locks are per database, and two flowsh
        # installations in two schemas of one database are strangers.
        return advisory_key(kind, self.b.schema, name)

    def _lock_connection(self, purpose: str) -> psycopg.Connection[Any]:
        conn = self.b._connect(application_name=f"flowsh {purpose}"[:63])
        try:
            conn.execute(LOCK_SESSION)
            from psycopg import sql

            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.b.schema)))
        except self.b.psycopg.Error as exc:
            conn.close()
            raise self.b._error(exc) from None
        return conn

    def _holder(self, key: int) -> str:
        try:
            row = self.b._do(lambda c: c.execute(
                "SELECT holder FROM flowsh_lock_holders WHERE key = %s", (key,)).fetchone(),
                single=True)
        except StateError:
            row = None
        return str(row[0]) if row else "another run"

    @contextmanager
    def workflow_lock(self, name: str, overlap: str,
                      timeout: float | None) -> Iterator[WorkflowLock]:
        """Overlap lock: a session-level advisory lock on a connection held for the run.
        skip: pg_try_advisory_lock; wait: pg_advisory_lock under lock_timeout."""
        key = self._lock_key("workflow", name)
        conn = self._lock_connection(f"workflow {name}")
        lock: _PgWorkflowLock | None = None
        try:
            try:
                if overlap == "skip":
                    row = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
                    if not (row and row[0]):
                        raise LockHeldError(
                            f"workflow {name!r} is already running: {self._holder(key)} "
                            "holds its lock (overlap: skip)")
                else:
                    # lock_timeout bounds an advisory lock wait as any other (0: no bound).
                    ms = 0 if timeout is None else max(1, int(timeout * 1000))
                    conn.execute(f"SET lock_timeout = {ms}")
                    try:
                        conn.execute("SELECT pg_advisory_lock(%s)", (key,))
                    except self.b.psycopg.errors.LockNotAvailable:
                        raise LockHeldError(
                            f"workflow {name!r}: gave up after waiting {timeout:g}s for "
                            f"{self._holder(key)} to finish (overlap: wait)") from None
                    conn.execute("SET lock_timeout = 0")
            except self.b.psycopg.Error as exc:
                raise self.b._error(exc) from None
            lock = _PgWorkflowLock(self, conn, key, f"workflow {name}")
            lock.note(None)
            self.held.append(lock)
            yield lock
        finally:
            if lock is not None:
                lock.release()
            conn.close()  # the server drops the lock with the session

    def hold_runner(self, run_id: str) -> _HeldLock | None:
        """The run's liveness lock: held on a connection of its own for the run's life."""
        key = self._lock_key("runner", run_id)
        conn = self._lock_connection(f"run {run_id}")
        try:
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
        except self.b.psycopg.Error as exc:
            conn.close()
            raise self.b._error(exc) from None
        if not (row and row[0]):
            conn.close()
            return None
        held = _HeldLock(self, conn, key, f"run {run_id}", run_id)
        self.held.append(held)
        self.run_id = run_id
        return held

    def runner_alive(self, run: RunRecord) -> bool:
        return self.run_alive(run.run_id)

    def run_alive(self, run_id: str) -> bool:
        """Whether any session holds the run's liveness lock, from pg_locks: a read that
        never takes the lock, so it cannot make a starting runner think it is taken."""
        key = self._lock_key("runner", run_id)
        row = self.b._do(lambda c: c.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND classid = %s::bigint::oid AND objid = %s::bigint::oid AND objsubid = 1)",
            ((key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF)).fetchone(), single=True)
        return bool(row and row[0])

    def _mark_running(self, run_id: str) -> None:
        args = (self.b._json({"status": "running"}), run_id)
        self.b._do(lambda c: c.execute(
            "UPDATE flowsh_runs SET status = 'running', record = record || %s "
            "WHERE run_id = %s AND status = 'crashed'", args), single=True)

    def watch(self, wake: Callable[[], None]) -> None:
        """Watch the held locks from a thread until the process ends: a lock lost and not
        taken back at once sets `lost` and calls `wake` (the runner's loop then raises it
        from check(), which stops the run's steps)."""
        self._wakes.append(wake)
        if self._watcher is None:
            self._watcher = threading.Thread(target=self._watch, name="flowsh-pg-locks",
                                             daemon=True)
            self._watcher.start()

    def check(self) -> None:
        if self.lost is not None:
            raise self.lost

    def _watch(self) -> None:
        while self.lost is None:
            with self._mu:
                fds = []
                for lock in self.held:
                    with_fd = -1 if lock.conn.closed else lock.conn.fileno()
                    if with_fd >= 0:
                        fds.append(with_fd)
            try:
                select.select(fds, [], [], WATCH_EVERY)
            except (OSError, ValueError):
                time.sleep(WATCH_EVERY)  # a connection closed under us: keep() sees it
            try:
                self.keep(wait=False)
            except StateError:
                pass  # kept in self.lost
            except Exception as exc:  # a watcher that dies silently would watch nothing
                self.lost = StateError(f"{self.b.url}: watching the run's locks failed: "
                                       f"{type(exc).__name__}: {exc}")
            if self.lost is not None:
                for wake in self._wakes:
                    wake()

    def _reconnect(self, purpose: str, wait: bool = True) -> psycopg.Connection[Any]:
        """A new lock connection, waiting as a transition does for a server coming back
        (not at all for the watcher: the lock is gone meanwhile)."""
        deadline = time.monotonic() + (0 if self.b.away or not wait else self.b.reconnect_for)
        while True:
            try:
                return self._lock_connection(purpose)
            except StateError:
                if time.monotonic() >= deadline:
                    self.b.away = True
                    raise
            time.sleep(0.5)

    def keep(self, wait: bool = True) -> None:
        """A lock's connection the server dropped (a restart, pg_terminate_backend) took the
        lock along: another host would soon see this runner dead, or start the workflow.
        Checked by the watcher thread (at once, and every WATCH_EVERY) and at each
        transition: taken again on a new connection, or, when that fails or another
        coordinator has it now, this run stops rather than run beside it."""
        self.check()
        with self._mu:
            try:
                self._keep(wait)
                for lock in self.held:
                    lock.settle()
            except StateError as exc:
                self.lost = StateError(f"lost a lock of this run: {exc}; its steps were "
                                       "stopped at once, before another host could run "
                                       "them again")
                raise self.lost from None

    def _keep(self, wait: bool) -> None:
        for lock in list(self.held):
            if not _maybe_dropped(lock.conn):
                continue
            try:
                lock.conn.execute("SELECT 1")
                continue
            except self.b.psycopg.Error:
                lock.conn.close()
            keys = lock.advisory_keys()
            try:
                conn = self._reconnect(lock.purpose, wait)
            except StateError:
                if keys:
                    raise
                # Nothing held on it (a run waiting for a slot): opened again when next
                # needed, not a lost lock — a waiting run died of a second drop in a row.
                continue
            for key in keys:
                try:
                    row = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
                except self.b.psycopg.Error as exc:
                    conn.close()
                    raise self.b._error(exc) from None
                if not (row and row[0]) and not lock.reclaim(conn, key):
                    conn.close()
                    raise StateError(
                        f"{self.b.url}: the server dropped the connection holding the "
                        f"{lock.purpose} lock, and another coordinator holds it now; "
                        "stopping this run")
            lock.conn = conn
            if lock.run_id is not None:
                # Another host may have read the run as crashed meanwhile: it is not.
                self._mark_running(lock.run_id)
            for wake in self._wakes:
                wake()  # a pass of the run loop: its slots' keepers take the new connection
            warn(f"{self.b.url}: the server dropped the connection holding the {lock.purpose} "
                 "lock; took the lock again")


def _maybe_dropped(conn: psycopg.Connection[Any]) -> bool:
    """An idle lock connection has nothing to read: when its socket turns readable, the
    server has said something (the FATAL of a termination) or closed it. Costs no round
    trip, so every transition can ask."""
    if conn.closed:
        return True
    try:
        readable, _, _ = select.select([conn.fileno()], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


class _HeldLock:
    """A session-level advisory lock and the connection that holds it."""

    def __init__(self, locks: PgLocks, conn: psycopg.Connection[Any], key: int,
                 purpose: str, run_id: str | None = None) -> None:
        self.locks, self.conn, self.key, self.purpose = locks, conn, key, purpose
        self.run_id = run_id

    def advisory_keys(self) -> list[int]:
        """The advisory locks its connection holds, to take again on a new one."""
        return [self.key]

    def reclaim(self, conn: psycopg.Connection[Any], key: int) -> bool:
        """Lock `key` on `conn` although another session holds it now, when that session
        is sure to let it go (a pool slot's fence only looking). No for the others."""
        return False

    def settle(self) -> None:
        """Writes owed to the server since it last failed one (a pool slot's holder row)."""

    def release(self) -> None:
        with self.locks._mu:  # not while the watcher takes it again
            if self in self.locks.held:
                self.locks.held.remove(self)
            self.conn.close()  # the server drops the lock with the session


class _PgWorkflowLock(_HeldLock, WorkflowLock):
    def __init__(self, locks: PgLocks, conn: psycopg.Connection[Any], key: int,
                 purpose: str) -> None:
        _HeldLock.__init__(self, locks, conn, key, purpose)
        WorkflowLock.__init__(self, None)

    def note(self, run_id: str | None) -> None:
        """Who holds the lock, for the message a skipped run prints on any host."""
        who = f"run {run_id}" if run_id else "a run"
        holder = f"{who} (pid {os.getpid()} on {os.uname().nodename})"
        try:
            self.conn.execute(
                "INSERT INTO flowsh_lock_holders (key, holder, since) VALUES (%s, %s, %s) "
                "ON CONFLICT (key) DO UPDATE SET holder = excluded.holder, "
                "since = excluded.since", (self.key, holder, time.time()))
        except self.locks.b.psycopg.Error as exc:
            raise self.locks.b._error(exc) from None


class _HeldSlots(_HeldLock):
    """The pool connection, watched with the run's other locks (PgLocks.watch): when the
    server drops it (a restart, failover, a proxy's cut) the slots it held go with it, so
    they are taken again at once on a new connection, or, when another coordinator has
    one now, the run stops its steps as for a lost overlap lock (POOL-8)."""

    def __init__(self, locks: PgLocks, conn: psycopg.Connection[Any]) -> None:
        super().__init__(locks, conn, 0, "pool slots")
        self.slots: dict[str, int] = {}  # "P/I" -> its advisory key, while held
        # Keys of slots let go whose holder row the server missed erasing: other hosts
        # would wait for the whole run (PgPoolLocks.try_lock), so it is erased later.
        self.owed: set[int] = set()

    def advisory_keys(self) -> list[int]:
        return list(self.slots.values())

    def settle(self) -> None:
        """Erase the holder rows owed (on the watcher's pass, and at each transition)."""
        run_id = self.locks.run_id
        if not self.owed or run_id is None or self.conn.closed:
            return
        keys = sorted(self.owed - set(self.slots.values()))  # a slot held again: not yet
        try:
            self.conn.execute("DELETE FROM flowsh_pool_holders WHERE key = ANY(%s) "
                              "AND run_id = %s", (keys, run_id))
        except self.locks.b.psycopg.Error:
            return  # the server is still away: the next pass tries again
        self.owed.difference_update(keys)

    def reclaim(self, conn: psycopg.Connection[Any], key: int) -> bool:
        """A slot's lock held by another session while the holder row still names this
        run: a host waiting for the slot, holding the lock only while it reads that row
        (PgPoolLocks.try_lock), which it lets go on finding this run alive. Failing the
        run on that look stopped a step nobody had taken the slot from. So it is waited
        for, a few seconds at most; a host that took the slot for good (this run seemed
        dead: its row names that host's run now) is not."""
        b, run_id = self.locks.b, self.locks.run_id
        if run_id is None:
            return False
        try:
            row = conn.execute("SELECT run_id FROM flowsh_pool_holders WHERE key = %s",
                               (key,)).fetchone()
            if not row or row[0] != run_id:
                return False
            conn.execute(f"SET lock_timeout = {int(RECLAIM_FOR * 1000)}")
            try:
                conn.execute("SELECT pg_advisory_lock(%s)", (key,))
            except b.psycopg.errors.LockNotAvailable:
                return False
            finally:
                conn.execute("SET lock_timeout = 0")
        except b.psycopg.Error:
            return False
        return True


class PgPoolLocks:
    """Pool slots across hosts (flowsh.pools.RemoteSlots, docs/semantics.md POOL-8): slot I
    of pool P is also the advisory lock ("pool", schema, "P/I"), taken after the host's slot
    file I, on one connection the runner opens at its first pooled step and keeps for the
    run. The server drops them all with that session, so a dead runner frees its slots on
    every host; a release is pg_advisory_unlock. The connection is watched as the overlap
    lock's is (_HeldSlots)."""

    def __init__(self, locks: PgLocks) -> None:
        self.locks = locks
        self.held: _HeldSlots | None = None
        # slot key -> (the run its holder row names, when this process first saw that run
        # dead): DEAD_GRACE
        self._dead_since: dict[int, tuple[str, float]] = {}
        self._asked_on: psycopg.Connection[Any] | None = None  # the last _query's

    @property
    def conn(self) -> psycopg.Connection[Any] | None:
        return None if self.held is None else self.held.conn

    def _key(self, pool: str, index: int) -> int:
        return self.locks._lock_key("pool", f"{pool}/{index}")

    def _query(self, sql: str, pool: str, index: int) -> bool:
        locks, b = self.locks, self.locks.b
        # A lock lost for good stops the run: no new slot on a connection that lost one.
        locks.check()
        name = f"{pool}/{index}"
        with locks._mu:  # the watcher may be taking the slots again on a new connection
            for again in (True, False):
                try:
                    if self.held is None:
                        self._open()
                    elif self.held.conn.closed or _maybe_dropped(self.held.conn):
                        # The server dropped it, and this thread asks before the watcher
                        # has seen it (a waiting step asks every 0.1 s): the watcher's
                        # work, done here: held slots taken again (or lost), a new
                        # connection. An error went up as the run's failure, exit 3.
                        locks.keep()
                        if self.held.conn.closed:  # nothing was held on it: left closed
                            self._open()
                    assert self.held is not None
                    row = self.held.conn.execute(sql, (self._key(pool, index),)).fetchone()
                    break
                except b.psycopg.Error as exc:
                    if again and self.held is not None and self.held.conn.broken:
                        continue  # dropped while asking: once more, as above
                    raise b._error(exc) from None
            got = bool(row and row[0])
            assert self.held is not None
            # A lock taken counts as a held slot only once try_lock's look says so (_hold).
            self._asked_on = self.held.conn
            if not sql.startswith("SELECT pg_try_advisory_lock"):
                self.held.slots.pop(name, None)
            return got

    def _hold(self, pool: str, index: int) -> bool:
        """Count slot `index` as held, after try_lock's look: unless the server dropped
        the connection its lock was taken on meanwhile (the lock went with it)."""
        with self.locks._mu:
            conn = self._asked_on
            if self.held is None or conn is None or self.held.conn is not conn:
                return False
            if conn.closed or _maybe_dropped(conn):
                try:
                    conn.execute("SELECT 1")
                except self.locks.b.psycopg.Error:
                    return False  # the watcher opens a new one
            self.held.slots[f"{pool}/{index}"] = self._key(pool, index)
            return True

    def _open(self) -> None:
        conn = self.locks._lock_connection("pools")
        if self.held is None:
            self.held = _HeldSlots(self.locks, conn)
            self.locks.held.append(self.held)
        else:
            self.held.conn = conn

    def try_lock(self, pool: str, index: int) -> bool:
        if not self._query("SELECT pg_try_advisory_lock(%s)", pool, index):
            return False
        # A free lock does not mean a free slot: a holder whose connection the server
        # dropped still runs its step until its watcher notices (WATCH_EVERY, more on a
        # loaded host), and taking the slot in that gap put two steps in a pool of one.
        # So a holder is also written down, and a slot whose last holder never let it go
        # is taken only once that run has ended (its liveness lock gone).
        key, locks = self._key(pool, index), self.locks
        try:
            row = locks.b._do(lambda c: c.execute(
                "SELECT run_id FROM flowsh_pool_holders WHERE key = %s", (key,)).fetchone(),
                single=True)
            if row and row[0] != locks.run_id and not self._holder_gone(key, str(row[0])):
                self._query("SELECT pg_advisory_unlock(%s)", pool, index)
                return False
            self._dead_since.pop(key, None)
            if locks.run_id is not None:
                args = (key, locks.run_id, time.time())
                locks.b._do(lambda c: c.execute(
                    "INSERT INTO flowsh_pool_holders (key, run_id, since) VALUES (%s, %s, %s) "
                    "ON CONFLICT (key) DO UPDATE SET run_id = excluded.run_id, "
                    "since = excluded.since", args), single=True)
        except BaseException:
            with contextlib.suppress(StateError):
                self._query("SELECT pg_advisory_unlock(%s)", pool, index)
            raise
        if self._hold(pool, index):
            return True
        # The lock went with a connection the server dropped during the look: not taken
        # (another try comes in POLL), and its row must not bar other hosts.
        self._erase(key)
        return False

    def _erase(self, key: int) -> None:
        locks = self.locks
        if locks.run_id is None:
            return
        args = (key, locks.run_id)
        try:
            locks.b._do(lambda c: c.execute(
                "DELETE FROM flowsh_pool_holders WHERE key = %s AND run_id = %s", args),
                single=True)
            if self.held is not None:
                self.held.owed.discard(key)
        except StateError:
            # When the server is away, erased once it answers again (_HeldSlots.settle):
            # until then other hosts wait for this slot.
            if self.held is not None:
                with locks._mu:
                    self.held.owed.add(key)

    def _holder_gone(self, key: int, run_id: str) -> bool:
        """Whether run `run_id`, named by slot `key`'s holder row, has ended: its liveness
        lock free, and seen free for DEAD_GRACE (not only while the server had dropped
        its sessions and its watcher was taking them back)."""
        now = time.monotonic()
        if self.locks.run_alive(run_id):
            self._dead_since.pop(key, None)
            return False
        seen = self._dead_since.get(key)
        if seen is None or seen[0] != run_id:
            self._dead_since[key] = seen = (run_id, now)
        return now - seen[1] >= DEAD_GRACE

    def unlock(self, pool: str, index: int) -> None:
        # The attempt has ended (its processes are gone): the slot is free for any host,
        # even when this run lost the lock meanwhile.
        key, locks = self._key(pool, index), self.locks
        self._erase(key)
        if locks.lost is not None:  # the server dropped it: nothing to let go
            if self.held is not None:
                self.held.slots.pop(f"{pool}/{index}", None)
            return
        self._query("SELECT pg_advisory_unlock(%s)", pool, index)

    def keep_fds(self) -> tuple[int, ...]:
        """The pool connection's socket, for a slot's keeper (flowsh.pools.Slot.keep_for):
        while any process has it open the server keeps the session, and its advisory
        locks, so a runner killed alone leaves its running steps' slots held on every host
        until those steps end (POOL-1). The runner's close still ends the session at once
        (libpq says Terminate), whoever else holds the socket."""
        conn = self.conn
        if conn is None or conn.closed:
            return ()
        try:
            return (conn.fileno(),)
        except self.locks.b.psycopg.Error:
            return ()

    def close(self) -> None:
        if self.held is not None:
            self.held.release()  # the server drops whatever this session still holds
            self.held = None
