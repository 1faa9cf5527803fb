"""Built-in state backend ``sqlite:///PATH`` (the default).

WAL mode, one short transaction per transition (BEGIN IMMEDIATE; a step's record, one
statement, commits on its own). ``synchronous=NORMAL`` makes every committed transition
survive a crash of flowsh (the WAL is in the kernel's page cache before COMMIT returns);
set ``FLOWSH_SQLITE_SYNC=FULL`` to also survive power loss at the cost of an fsync per
transition. Several flowsh processes can share one database:
writers queue on SQLite's lock (busy timeout 30 s) and lose nothing.
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from flowsh import hookimpl
from flowsh.errors import NotFoundError, StateError, UsageError
from flowsh.hookspecs import Register
from flowsh.state import NoSpaceError, RunRecord, StepRecord, ensure_private_dir, flowsh_home

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    workflow TEXT NOT NULL,
    file TEXT,
    definition_hash TEXT,
    params TEXT NOT NULL,
    status TEXT NOT NULL,
    pid INTEGER,
    host TEXT,
    started_at REAL NOT NULL,
    ended_at REAL,
    heartbeat REAL,
    exit_code INTEGER,
    step_names TEXT NOT NULL,
    resumed_from TEXT
);
CREATE INDEX IF NOT EXISTS runs_by_workflow ON runs (workflow, started_at DESC);
CREATE INDEX IF NOT EXISTS runs_by_start ON runs (started_at DESC);
CREATE INDEX IF NOT EXISTS runs_by_status ON runs (status, started_at DESC);
-- Every `flowsh run` asks for this workflow's running or crashed runs (a dead runner's
-- steps are stopped first): without it, a scan of all the workflow's runs (22 ms at 14,000).
CREATE INDEX IF NOT EXISTS runs_by_workflow_status ON runs (workflow, status, started_at DESC);
CREATE TABLE IF NOT EXISTS steps (
    run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    exit_code INTEGER,
    signal INTEGER,
    started_at REAL,
    ended_at REAL,
    outputs TEXT NOT NULL,
    log_path TEXT,
    message TEXT,
    pid INTEGER,
    PRIMARY KEY (run_id, name)
);
"""
# Each entry takes the schema from version i (PRAGMA user_version) to i + 1. SCHEMA above is
# version 0 and never changes: a database of any earlier flowsh is migrated in place, once,
# by whichever process opens it first (BEGIN IMMEDIATE serializes them).
MIGRATIONS: tuple[str, ...] = (
    "ALTER TABLE steps ADD COLUMN skip_reason TEXT",
    # Where a remote attempt runs (flowsh-celery): task id, queue, worker, submission time.
    "ALTER TABLE steps ADD COLUMN task_id TEXT",
    "ALTER TABLE steps ADD COLUMN queue TEXT",
    "ALTER TABLE steps ADD COLUMN worker TEXT",
    "ALTER TABLE steps ADD COLUMN queued_at REAL",
    # The slot a scheduled run stands for (RFC 3339 text, docs/semantics.md SLOT-*).
    "ALTER TABLE runs ADD COLUMN scheduled_time TEXT",
    # Sub-workflows (`call:`): a child run's parent run and step; a call step's child run.
    "ALTER TABLE runs ADD COLUMN parent_run TEXT",
    "ALTER TABLE runs ADD COLUMN parent_step TEXT",
    "ALTER TABLE steps ADD COLUMN child_run TEXT",
    # A step's fingerprint and its inputs' and generated files' hashes (flowsh/uptodate.py).
    "ALTER TABLE steps ADD COLUMN fingerprint TEXT",
    "ALTER TABLE steps ADD COLUMN hashes TEXT",
    # A `foreach` step's items as expanded (JSON list; docs/semantics.md FOREACH-3).
    "ALTER TABLE steps ADD COLUMN items TEXT",
)

RUN_COLS = ("run_id", "workflow", "file", "definition_hash", "params", "status", "pid", "host",
            "started_at", "ended_at", "heartbeat", "exit_code", "step_names", "resumed_from",
            "scheduled_time", "parent_run", "parent_step")
STEP_COLS = ("run_id", "name", "status", "attempts", "exit_code", "signal", "started_at",
             "ended_at", "outputs", "log_path", "message", "pid", "skip_reason", "task_id",
             "queue", "worker", "queued_at", "child_run", "fingerprint", "hashes",
             "items")


def _path_of(url: str) -> Path | None:
    """The database file (None: `:memory:`). As for json:// (and file URLs): what follows
    `sqlite://` is the path, so sqlite:///var/lib/x.db is absolute; SQLAlchemy's
    sqlite:////abs form works too."""
    path = url.removeprefix("sqlite://")
    path = path[1:] if path.startswith("//") else path
    if path.startswith("~"):
        path = os.path.expanduser(path)
    return Path(path) if path.lstrip("/") != ":memory:" else None


# A step's record, written over its earlier one. An upsert rather than INSERT OR REPLACE,
# which deletes the row and inserts it again (index entries, foreign key check): 37 us a
# save down to 13, three saves per step.
_SAVE_STEP = (f"INSERT INTO steps ({','.join(STEP_COLS)}) "
              f"VALUES ({','.join('?' * len(STEP_COLS))}) "
              "ON CONFLICT (run_id, name) DO UPDATE SET "
              + ", ".join(f"{c} = excluded.{c}" for c in STEP_COLS[2:]))


class SQLiteBackend:
    def __init__(self, url: str) -> None:
        self.url = url
        self.path = _path_of(url)
        self.full = False  # opened read-only because the disk is full
        self.conn = self._connect()

    @staticmethod
    def store_exists(url: str) -> bool:
        """Whether opening `url` would find a database rather than make one
        (store.open_existing)."""
        path = _path_of(url)
        return path is None or path.exists()

    def _connect(self) -> sqlite3.Connection:
        target = ":memory:"
        if self.path is not None:
            ensure_private_dir(self.path.parent)
            target = str(self.path)
            nofollow = 0
            home = os.path.abspath(flowsh_home())
            if os.path.abspath(self.path).startswith(home + os.sep):
                # Under $FLOWSH_HOME flowsh follows no link (docs/state.md): a planted
                # flowsh.db, -wal or -shm link would have SQLite write through it.
                nofollow = os.O_NOFOLLOW
                for extra in ("-wal", "-shm"):
                    if os.path.islink(f"{self.path}{extra}"):
                        raise StateError(f"{self.path}{extra}: is a symbolic link; flowsh "
                                         "does not follow it (O_NOFOLLOW)")
            try:
                # Create it 0600 ourselves; SQLite gives its -wal/-shm files the same mode.
                os.close(os.open(self.path, os.O_RDWR | os.O_CREAT | nofollow, 0o600))
            except PermissionError:
                raise StateError(f"{self.path}: permission denied") from None
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise StateError(f"{self.path}: is a symbolic link; flowsh does not "
                                     "follow it (O_NOFOLLOW)") from None
                raise StateError(f"{self.path}: {exc.strerror}") from None
        try:
            return self._open(target)
        except StateError:
            if not self._disk_full():
                raise
        # A full disk: WAL mode cannot even size its shared-memory index, so a normal
        # connection cannot read either. Read the database file as it is (no locks, no
        # index) so status/history/logs still work; every write says the disk is full.
        self.full = True
        with self._errors():
            uri = f"file:{urllib.parse.quote(str(self.path))}?immutable=1"
            return sqlite3.connect(uri, uri=True, timeout=30.0,
                                   isolation_level=None, check_same_thread=False)

    def _disk_full(self) -> bool:
        if self.path is None:
            return False
        try:
            st = os.statvfs(self.path.parent)
        except OSError:
            return False
        # Less than a few pages left: SQLite's "disk I/O error" (an shm or WAL write that
        # failed) is ENOSPC in all but name.
        return st.f_bavail * st.f_frsize < 64 * 1024

    def _open(self, target: str) -> sqlite3.Connection:
        with self._errors():
            conn = sqlite3.connect(target, timeout=30.0, isolation_level=None,
                                   check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            sync = os.environ.get("FLOWSH_SQLITE_SYNC", "NORMAL").upper()
            if sync not in ("OFF", "NORMAL", "FULL", "EXTRA"):
                raise UsageError(f"FLOWSH_SQLITE_SYNC={sync!r}: use NORMAL or FULL")
            conn.execute(f"PRAGMA synchronous={sync}")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.executescript(SCHEMA)
            _migrate(conn)
        return conn

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.DatabaseError as exc:
            text = str(exc)
            where = self.path or "state database"
            if "not a database" in text or "malformed" in text:
                raise StateError(f"{where}: corrupt or not a flowsh database ({text})") from None
            if "full" in text or ("I/O error" in text and self._disk_full()):
                raise NoSpaceError(f"{where}: cannot write state: No space left on device; "
                                   "the previous record is intact") from None
            if "readonly" in text or "unable to open" in text:
                raise StateError(f"{where}: not writable ({text})") from None
            raise StateError(f"{where}: {text}") from None

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        if self.full:
            raise NoSpaceError(f"{self.path}: cannot write state: No space left on device; "
                               "the previous record is intact")
        with self._errors():
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    def _write(self, sql: str, args: tuple[Any, ...]) -> None:
        """One statement as its own transaction (autocommit): committed, or rolled back
        whole, when it returns, as with BEGIN IMMEDIATE and COMMIT around it (SQLite waits
        for the write lock with the busy timeout either way), in one call instead of 3."""
        if self.full:
            raise NoSpaceError(f"{self.path}: cannot write state: No space left on device; "
                               "the previous record is intact")
        with self._errors():
            self.conn.execute(sql, args)

    # -- writes ---------------------------------------------------------------------------

    def _run_row(self, run: RunRecord) -> tuple[Any, ...]:
        return (run.run_id, run.workflow, run.file, run.definition_hash, json.dumps(run.params),
                run.status, run.pid, run.host, run.started_at, run.ended_at, run.heartbeat,
                run.exit_code, json.dumps(run.step_names), run.resumed_from,
                run.scheduled_time, run.parent_run, run.parent_step)

    def _step_row(self, run_id: str, s: StepRecord) -> tuple[Any, ...]:
        return (run_id, s.name, s.status, s.attempts, s.exit_code, s.signal, s.started_at,
                s.ended_at, json.dumps(s.outputs), s.log_path, s.message, s.pid, s.skip_reason,
                s.task_id, s.queue, s.worker, s.queued_at, s.child_run, s.fingerprint,
                json.dumps(s.hashes) if s.hashes else None,
                json.dumps(s.items) if s.items is not None else None)

    def create_run(self, run: RunRecord) -> None:
        with self._tx() as c:
            c.execute(f"INSERT INTO runs ({','.join(RUN_COLS)}) "
                      f"VALUES ({','.join('?' * len(RUN_COLS))})",
                      self._run_row(run))
            c.executemany(f"INSERT INTO steps ({','.join(STEP_COLS)}) "
                          f"VALUES ({','.join('?' * len(STEP_COLS))})",
                          [self._step_row(run.run_id, s) for s in run.steps.values()])

    def update_run(self, run: RunRecord) -> None:
        with self._tx() as c:
            # An upsert, not INSERT OR REPLACE: a replace deletes the row first, and the
            # foreign key's ON DELETE CASCADE would take the run's steps with it.
            updates = ", ".join(f"{c} = excluded.{c}" for c in RUN_COLS[1:])
            c.execute(f"INSERT INTO runs ({','.join(RUN_COLS)}) "
                      f"VALUES ({','.join('?' * len(RUN_COLS))}) "
                      f"ON CONFLICT (run_id) DO UPDATE SET {updates}", self._run_row(run))
            c.execute(
                f"DELETE FROM steps WHERE run_id = ? AND name NOT IN "
                f"({','.join('?' * len(run.steps))})", (run.run_id, *run.steps))

    def save_step(self, run: RunRecord, step: StepRecord) -> None:
        # The engine beats the heartbeat on its own clock; a step write needs no second
        # statement for it.
        self._write(_SAVE_STEP, self._step_row(run.run_id, step))

    def heartbeat(self, run: RunRecord) -> None:
        self._write("UPDATE runs SET heartbeat = ? WHERE run_id = ?",
                    (run.heartbeat, run.run_id))

    def delete_runs(self, run_ids: list[str]) -> int:
        n = 0
        with self._tx() as c:
            for i in range(0, len(run_ids), 500):
                chunk = run_ids[i:i + 500]
                marks = ",".join("?" * len(chunk))
                c.execute(f"DELETE FROM steps WHERE run_id IN ({marks})", chunk)
                n += c.execute(f"DELETE FROM runs WHERE run_id IN ({marks})", chunk).rowcount
        return n

    # -- reads ----------------------------------------------------------------------------

    def _corrupt(self, run_id: object, what: str) -> StateError:
        return StateError(f"{self.path or 'state database'}: run {run_id}: corrupt record "
                          f"({what}); left as it is (repair or delete that row)")

    def _json(self, run_id: object, column: str, text: object) -> Any:
        try:
            return json.loads(text)  # type: ignore[arg-type]
        except (TypeError, ValueError) as exc:
            raise self._corrupt(run_id, f"column {column} is not JSON: {exc}") from None

    def _run_from(self, row: tuple[Any, ...]) -> RunRecord:
        data = dict(zip(RUN_COLS, row, strict=True))
        data["params"] = self._json(data["run_id"], "params", data["params"])
        data["step_names"] = self._json(data["run_id"], "step_names", data["step_names"])
        try:
            return RunRecord.from_dict(data)
        except ValueError as exc:
            raise self._corrupt(data["run_id"], str(exc)) from None

    def _step_from(self, row: tuple[Any, ...]) -> StepRecord:
        data = dict(zip(STEP_COLS, row, strict=True))
        run_id = data.pop("run_id")
        data["outputs"] = self._json(run_id, f"outputs of step {data['name']!r}",
                                     data["outputs"])
        data["hashes"] = self._json(run_id, f"hashes of step {data['name']!r}",
                                    data["hashes"]) if data["hashes"] else {}
        if data["items"] is not None:
            data["items"] = self._json(run_id, f"items of step {data['name']!r}", data["items"])
        try:
            return StepRecord.from_dict(data)
        except ValueError as exc:
            raise self._corrupt(run_id, str(exc)) from None

    def load_run(self, run_id: str) -> RunRecord:
        cols = ",".join(RUN_COLS)
        with self._errors():
            rows = self.conn.execute(f"SELECT {cols} FROM runs WHERE run_id = ?",
                                     (run_id,)).fetchall()
            if not rows:  # a unique prefix is enough, as with git
                like = run_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                rows = self.conn.execute(
                    f"SELECT {cols} FROM runs WHERE run_id LIKE ? ESCAPE '\\' LIMIT 2",
                    (like + "%",)).fetchall()
            if not rows:
                raise NotFoundError(f"no run {run_id!r} in {self.url}")
            if len(rows) > 1:
                raise UsageError(f"run id prefix {run_id!r} is ambiguous: "
                                 f"{rows[0][0]}, {rows[1][0]}, ...")
            run = self._run_from(rows[0])
            for row in self.conn.execute(
                f"SELECT {','.join(STEP_COLS)} FROM steps WHERE run_id = ?", (run.run_id,)
            ):
                rec = self._step_from(row)
                run.steps[rec.name] = rec
        order = {n: i for i, n in enumerate(run.step_names)}
        run.steps = dict(sorted(run.steps.items(), key=lambda kv: order.get(kv[0], 1 << 30)))
        return run

    def list_runs(self, workflow: str | None = None, *, limit: int | None = None,
                  statuses: frozenset[str] | None = None, offset: int = 0) -> list[RunRecord]:
        where, args = [], []
        if workflow is not None:
            where.append("workflow = ?")
            args.append(workflow)
        if statuses:
            where.append(f"status IN ({','.join('?' * len(statuses))})")
            args.extend(sorted(statuses))
        sql = f"SELECT {','.join(RUN_COLS)} FROM runs"
        if workflow is not None and statuses:
            # The planner prefers runs_by_workflow, which gives the order without a sort,
            # and reads every run of the workflow: 10 ms at 14,000 runs, against 0.02.
            sql += " INDEXED BY runs_by_workflow_status"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY started_at DESC"
        if limit is not None or offset:
            # Pages of history (flowsh serve): OFFSET walks the started_at index.
            sql += f" LIMIT {int(limit) if limit is not None else -1} OFFSET {int(offset)}"
        with self._errors():
            return [self._run_from(r) for r in self.conn.execute(sql, args)]

    def workflow_names(self) -> list[str]:
        """Every recorded workflow, sorted: a skip-scan of the (workflow, started_at) index,
        one seek per workflow, where DISTINCT would read every run (flowsh serve's
        dashboard with 100,000 runs)."""
        sql = ("WITH RECURSIVE w(name) AS (SELECT MIN(workflow) FROM runs UNION ALL "
               "SELECT (SELECT MIN(workflow) FROM runs WHERE workflow > w.name) FROM w "
               "WHERE w.name IS NOT NULL) SELECT name FROM w WHERE name IS NOT NULL")
        with self._errors():
            return [row[0] for row in self.conn.execute(sql)]

    def close(self) -> None:
        self.conn.close()


@hookimpl
def flowsh_register_state_backends(register: Register) -> None:
    register("sqlite", SQLiteBackend)


def _migrate(conn: sqlite3.Connection) -> None:
    if conn.execute("PRAGMA user_version").fetchone()[0] >= len(MIGRATIONS):
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]  # another may have won
        for statement in MIGRATIONS[version:]:
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {max(version, len(MIGRATIONS))}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
