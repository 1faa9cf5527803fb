"""Built-in state backend ``postgresql://…`` (and ``postgres://…``): state shared by hosts.

Needs psycopg 3 (``pip install 'flowsh[postgresql]'``); the module imports it only when a
URL names it, so the core install stays small. The URL is libpq's: everything libpq takes
works (``sslmode``, ``connect_timeout``, ``options=-csearch_path%3Dflowsh`` for a schema of
its own, which flowsh creates). A password is best kept out of the URL (``~/.pgpass`` or
``PGPASSFILE``); one given in it is masked in every message, and taken out of
``FLOWSH_STATE`` before any step starts (docs/distributed.md).

Records: one row per run and per step, each holding the dataclass as ``jsonb`` (a field
added to RunRecord or StepRecord flows through with no schema change) beside real columns
for what queries filter and sort on. One transaction per transition. Locks: PostgreSQL
advisory locks on connections held for the run (flowsh/builtin/pg_locks.py), so an
overlap lock spans hosts and a dead coordinator is known the moment the server drops its
connection.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, TypeVar

from flowsh import hookimpl
from flowsh.builtin.pg_locks import PgLocks, PgPoolLocks, advisory_key
from flowsh.errors import NotFoundError, StateError, UsageError
from flowsh.hookspecs import Register
from flowsh.lock import Releasable, WorkflowLock
from flowsh.plugins import warn
from flowsh.secrets import url_without_password
from flowsh.state import NoSpaceError, RunRecord, StepRecord

if TYPE_CHECKING:
    import psycopg

T = TypeVar("T")

# Schema versions: each entry migrates from the one before; a database at a version this
# flowsh does not know (a newer flowsh migrated it) is refused rather than written.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE flowsh_runs (
        run_id text PRIMARY KEY,
        workflow text NOT NULL,
        status text NOT NULL,
        started_at double precision NOT NULL,
        heartbeat double precision,
        record jsonb NOT NULL
    );
    CREATE INDEX flowsh_runs_by_workflow ON flowsh_runs (workflow, started_at DESC);
    CREATE INDEX flowsh_runs_by_start ON flowsh_runs (started_at DESC);
    CREATE INDEX flowsh_runs_by_prefix ON flowsh_runs (run_id text_pattern_ops);
    CREATE TABLE flowsh_steps (
        run_id text NOT NULL REFERENCES flowsh_runs (run_id) ON DELETE CASCADE,
        name text NOT NULL,
        status text NOT NULL,
        record jsonb NOT NULL,
        PRIMARY KEY (run_id, name)
    );
    CREATE TABLE flowsh_lock_holders (
        key bigint PRIMARY KEY,
        holder text NOT NULL,
        since double precision NOT NULL
    );
    """,
    # POOL-8: who holds each cross-host pool slot, so a slot whose holder lost its
    # connection is not taken while that run may still run its step.
    """
    CREATE TABLE flowsh_pool_holders (
        key bigint PRIMARY KEY,
        run_id text NOT NULL,
        since double precision NOT NULL
    );
    """,
    # A workflow's runs of some statuses (catch-up and SLOT-8 read its succeeded ones at
    # every scheduled tick) without reading all its runs; as SQLite's runs_by_*_status.
    """
    CREATE INDEX flowsh_runs_by_workflow_status
        ON flowsh_runs (workflow, status, started_at DESC);
    CREATE INDEX flowsh_runs_by_status ON flowsh_runs (status, started_at DESC);
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)
# How long a transition waits for a server that dropped its connection to take it again
# (a restart takes a few seconds); past that the run stops with exit 3.
RECONNECT_FOR = 15.0  # FLOWSH_PG_RECONNECT overrides (seconds)

_PASSWORD_IN_URL = re.compile(r"(://[^:/@?#]*:)([^@/?#]*)(@)")
_PASSWORD_PARAM = re.compile(r"((?:^|[?&\s])password=)([^&\s]*)", re.I)


def mask_url(url: str) -> str:
    """The URL with its password (in the authority or a `password=` parameter) as ***."""
    url = _PASSWORD_IN_URL.sub(r"\1***\3", url)
    return _PASSWORD_PARAM.sub(r"\1***", url)


def _import_psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        raise UsageError("state URL postgresql://…: the PostgreSQL backend needs psycopg; "
                         "install it with: pip install 'flowsh[postgresql]'") from None
    return psycopg


class PostgresBackend:
    def __init__(self, url: str) -> None:
        self.psycopg = _import_psycopg()
        self.raw_url = url
        self.url = mask_url(url)
        # Known before libpq parses the URL: its complaint about a bad one quotes it whole.
        found = _PASSWORD_IN_URL.search(url) or _PASSWORD_PARAM.search(url)
        self.password: str | None = found.group(2) if found and found.group(2) else None
        try:
            params = self.psycopg.conninfo.conninfo_to_dict(url)
        except self.psycopg.ProgrammingError as exc:
            raise UsageError(f"state URL {self.url}: {self._text(exc)}") from None
        self.password = params.get("password") or self.password
        self._scrub_environment()
        # connect_timeout: an unreachable host (a firewall that drops) must not hang flowsh
        # for the kernel's two minutes. application_name: what a DBA sees in pg_stat_activity.
        self.defaults = {k: v for k, v in (("connect_timeout", "10"),
                                           ("application_name", "flowsh"))
                         if k not in params}
        self.conn = self._connect()
        self.away = False  # the server went away and did not come back in time
        try:
            self.reconnect_for = float(os.environ.get("FLOWSH_PG_RECONNECT", RECONNECT_FOR))
        except ValueError:
            raise UsageError("FLOWSH_PG_RECONNECT: a number of seconds, e.g. 15") from None
        try:
            self.schema = self._migrate()
        except BaseException:
            self.conn.close()
            raise
        self.locks = PgLocks(self)

    def _scrub_environment(self) -> None:
        """Steps inherit flowsh's environment: a password must not go with FLOWSH_STATE,
        whichever URL this backend was opened with (a step that runs flowsh itself finds it
        in ~/.pgpass or PGPASSFILE instead)."""
        state = os.environ.get("FLOWSH_STATE")
        if state and url_without_password(state) != state:
            os.environ["FLOWSH_STATE"] = url_without_password(state)

    # -- connections and errors -------------------------------------------------------

    def _text(self, exc: BaseException) -> str:
        """The server's or libpq's message, one line, without the password or the URL."""
        text = " ".join(str(exc).split())
        text = text.replace(self.raw_url, self.url)
        if self.password:
            text = text.replace(self.password, "***")
        return text.removeprefix("connection failed: ")

    def _connect(self, **extra: str) -> psycopg.Connection[Any]:
        try:
            conn: psycopg.Connection[Any] = self.psycopg.connect(
                self.raw_url, autocommit=True, **{**self.defaults, **extra})
            return conn
        except self.psycopg.ProgrammingError as exc:  # libpq refused the URL itself
            raise UsageError(f"state URL {self.url}: {self._text(exc)}") from None
        except self.psycopg.Error as exc:
            raise StateError(f"{self.url}: cannot connect: {self._text(exc)}") from None

    def _error(self, exc: BaseException) -> StateError:
        errors = self.psycopg.errors
        text = self._text(exc)
        if isinstance(exc, errors.DiskFull):
            return NoSpaceError(f"{self.url}: cannot write state: {text}; "
                                "the previous record is intact")
        if isinstance(exc, errors.InsufficientPrivilege):
            return StateError(f"{self.url}: not writable ({text})")
        return StateError(f"{self.url}: {text}")

    def _do(self, work: Callable[[psycopg.Connection[Any]], T], *, single: bool = False) -> T:
        """`work` in one transaction. A connection that broke (a server restart, a failover)
        is opened again, for up to FLOWSH_PG_RECONNECT seconds (15), before the error
        reaches the run.
        Every write is an upsert or a delete, so running one twice (a COMMIT whose answer
        was lost) changes nothing. `single`: `work` is one statement, a transaction of its own
        in autocommit (one round trip, not BEGIN, statement, COMMIT)."""
        deadline: float | None = None
        while True:
            try:
                if self.conn.closed:
                    self.conn = self._connect()
                if single:
                    result = work(self.conn)
                else:
                    with self.conn.transaction():
                        result = work(self.conn)
                self.away = False
                return result
            except self.psycopg.OperationalError as exc:
                if not self.conn.broken:
                    raise self._error(exc) from None
                self.conn.close()
                error: StateError = self._error(exc)
            except self.psycopg.Error as exc:
                raise self._error(exc) from None
            except StateError as exc:  # reconnecting failed: the server is still away
                error = exc
            now = time.monotonic()
            if deadline is None:
                # Waited for once already: the writes that follow (the run recording
                # how it ended) fail at once.
                deadline = now if self.away else now + self.reconnect_for
                self.away = True
                warn(f"{self.url}: lost the connection to the server; trying again for "
                     f"{self.reconnect_for:g}s")
            lost = getattr(getattr(self, "locks", None), "lost", None)  # none before migrate
            if lost is not None:
                # A lock of the run went with the server: the run stops now, not after
                # waiting for the server (its steps would run on meanwhile).
                raise lost
            if now >= deadline:
                raise error
            time.sleep(0.5)

    def _migrate(self) -> str:
        """Create or bring up to date flowsh's tables, in the first schema of search_path
        (created if missing). Under a transaction-scoped advisory lock: two coordinators
        starting at once must not both migrate (CREATE TABLE IF NOT EXISTS is not safe
        against a concurrent one)."""
        def schema_of(c: psycopg.Connection[Any]) -> str:
            path = c.execute("SHOW search_path").fetchone()
            first = (path[0] if path else "").split(",")[0].strip()
            if first and first != '"$user"':
                return first.strip('"')
            row = c.execute("SELECT current_schema()").fetchone()
            if row is None or row[0] is None:
                raise StateError(f"{self.url}: no schema to create flowsh's tables in "
                                 "(set one: ?options=-csearch_path%3Dflowsh)")
            return str(row[0])

        def version(c: psycopg.Connection[Any], schema: str) -> int | None:
            exists = c.execute("SELECT to_regclass(format('%%I.flowsh_meta', %s::text))",
                               (schema,)).fetchone()
            if not exists or exists[0] is None:
                return None
            from psycopg import sql

            row = c.execute(sql.SQL("SELECT version FROM {}.flowsh_meta").format(
                sql.Identifier(schema))).fetchone()
            return int(row[0]) if row else None

        def migrate(c: psycopg.Connection[Any]) -> str:
            schema = schema_of(c)
            current = version(c, schema)
            if current == SCHEMA_VERSION:
                return schema  # the common case: no lock taken
            c.execute("SELECT pg_advisory_xact_lock(%s)", (advisory_key("migrate", schema),))
            from psycopg import sql

            c.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
            c.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(schema)))
            c.execute("CREATE TABLE IF NOT EXISTS flowsh_meta ("
                      "one boolean PRIMARY KEY DEFAULT true CHECK (one), version int NOT NULL)")
            row = c.execute("SELECT version FROM flowsh_meta").fetchone()
            current = int(row[0]) if row else 0
            if current > SCHEMA_VERSION:
                raise StateError(f"{self.url}: schema {schema} is at version {current}, made "
                                 f"by a newer flowsh (this one knows {SCHEMA_VERSION}); "
                                 "upgrade flowsh")
            for step in MIGRATIONS[current:]:
                c.execute(step)
            c.execute("INSERT INTO flowsh_meta (version) VALUES (%s) ON CONFLICT (one) "
                      "DO UPDATE SET version = excluded.version", (SCHEMA_VERSION,))
            return schema

        schema = self._do(migrate)
        from psycopg import sql

        # The schema may have just been created: search_path skipped it until now.
        self.conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        self.search_path = schema
        return schema

    # -- writes -----------------------------------------------------------------------

    def _json(self, data: dict[str, Any]) -> Any:
        from psycopg.types.json import Jsonb

        return Jsonb(data)

    def _run_args(self, run: RunRecord) -> tuple[Any, ...]:
        record = run.to_dict()
        del record["steps"]
        return (run.run_id, run.workflow, run.status, run.started_at, run.heartbeat,
                self._json(record))

    def _step_rows(self, run_id: str, steps: list[StepRecord]) -> list[tuple[Any, ...]]:
        return [(run_id, s.name, s.status, self._json(s.to_dict())) for s in steps]

    _UPSERT_RUN = (
        "INSERT INTO flowsh_runs (run_id, workflow, status, started_at, heartbeat, record) "
        "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (run_id) DO UPDATE SET "
        "workflow = excluded.workflow, status = excluded.status, "
        "started_at = excluded.started_at, heartbeat = excluded.heartbeat, "
        "record = excluded.record")
    _UPSERT_STEP = (
        "INSERT INTO flowsh_steps (run_id, name, status, record) VALUES (%s, %s, %s, %s) "
        "ON CONFLICT (run_id, name) DO UPDATE SET status = excluded.status, "
        "record = excluded.record")

    def create_run(self, run: RunRecord) -> None:
        def work(c: psycopg.Connection[Any]) -> None:
            c.execute(self._UPSERT_RUN, self._run_args(run))
            with c.cursor() as cur:
                cur.executemany(self._UPSERT_STEP,
                                self._step_rows(run.run_id, list(run.steps.values())))
        self._do(work)

    def update_run(self, run: RunRecord) -> None:
        def work(c: psycopg.Connection[Any]) -> None:
            c.execute(self._UPSERT_RUN, self._run_args(run))
            c.execute("DELETE FROM flowsh_steps WHERE run_id = %s AND NOT (name = ANY(%s))",
                      (run.run_id, list(run.steps)))
        self._do(work)

    def save_step(self, run: RunRecord, step: StepRecord) -> None:
        self._do(lambda c: c.execute(self._UPSERT_STEP, self._step_rows(run.run_id, [step])[0]),
                 single=True)
        self.locks.keep()

    def heartbeat(self, run: RunRecord) -> None:
        self._do(lambda c: c.execute("UPDATE flowsh_runs SET heartbeat = %s WHERE run_id = %s",
                                     (run.heartbeat, run.run_id)), single=True)
        self.locks.keep()

    def delete_runs(self, run_ids: list[str]) -> int:
        # The steps go with their runs (ON DELETE CASCADE), in the same transaction.
        return self._do(lambda c: c.execute(
            "DELETE FROM flowsh_runs WHERE run_id = ANY(%s)", (run_ids,)).rowcount, single=True)

    # -- reads ------------------------------------------------------------------------

    def _corrupt(self, run_id: object, what: str) -> StateError:
        return StateError(f"{self.url}: run {run_id}: corrupt record ({what}); left as it "
                          "is (repair or delete that row)")

    def _run_from(self, run_id: str, heartbeat: float | None, record: Any) -> RunRecord:
        if not isinstance(record, dict):
            raise self._corrupt(run_id, "the record is not a JSON object")
        # The heartbeat has its own column: beats do not rewrite the record.
        data = {**record, "run_id": run_id, "heartbeat": heartbeat}
        try:
            return RunRecord.from_dict(data)
        except ValueError as exc:
            raise self._corrupt(run_id, str(exc)) from None

    def load_run(self, run_id: str) -> RunRecord:
        if "\0" in run_id:  # PostgreSQL text cannot hold one, so no run id has one
            raise NotFoundError(f"no run {run_id!r} in {self.url}")
        cols = "run_id, heartbeat, record"

        def work(c: psycopg.Connection[Any]) -> tuple[list[Any], list[Any]]:
            rows = c.execute(f"SELECT {cols} FROM flowsh_runs WHERE run_id = %s",
                             (run_id,)).fetchall()
            if not rows:  # a unique prefix is enough, as with git
                like = run_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                rows = c.execute(f"SELECT {cols} FROM flowsh_runs WHERE run_id LIKE %s "
                                 "ORDER BY run_id LIMIT 2", (like + "%",)).fetchall()
            steps = c.execute("SELECT name, record FROM flowsh_steps WHERE run_id = %s",
                              (rows[0][0],)).fetchall() if len(rows) == 1 else []
            return rows, steps

        rows, steps = self._do(work)
        if not rows:
            raise NotFoundError(f"no run {run_id!r} in {self.url}")
        if len(rows) > 1:
            raise UsageError(f"run id prefix {run_id!r} is ambiguous: "
                             f"{rows[0][0]}, {rows[1][0]}, ...")
        run = self._run_from(*rows[0])
        for name, record in steps:
            try:
                rec = StepRecord.from_dict({**record, "name": name}
                                           if isinstance(record, dict) else record)
            except ValueError as exc:
                raise self._corrupt(run.run_id, str(exc)) from None
            run.steps[rec.name] = rec
        order = {n: i for i, n in enumerate(run.step_names)}
        run.steps = dict(sorted(run.steps.items(), key=lambda kv: order.get(kv[0], 1 << 30)))
        return run

    def list_runs(self, workflow: str | None = None, *, limit: int | None = None,
                  statuses: frozenset[str] | None = None) -> list[RunRecord]:
        where: list[str] = []
        args: list[Any] = []
        if workflow is not None and "\0" in workflow:
            return []  # no workflow is named so (a query would fail, not find nothing)
        if workflow is not None:
            where.append("workflow = %s")
            args.append(workflow)
        if statuses:
            where.append("status = ANY(%s)")
            args.append(sorted(statuses))
        query = "SELECT run_id, heartbeat, record FROM flowsh_runs"
        if where:
            query += " WHERE " + " AND ".join(where)
        query += " ORDER BY started_at DESC, run_id DESC"
        if limit is not None:
            query += f" LIMIT {int(limit)}"
        rows = self._do(lambda c: c.execute(query, args).fetchall(), single=True)
        return [self._run_from(*row) for row in rows]

    # -- locks (flowsh.lock.LockingBackend), in flowsh/builtin/pg_locks.py -------------

    def workflow_lock(self, name: str, overlap: str,
                      timeout: float | None) -> AbstractContextManager[WorkflowLock]:
        return self.locks.workflow_lock(name, overlap, timeout)

    def hold_runner(self, run_id: str) -> Releasable | None:
        return self.locks.hold_runner(run_id)

    def watch_locks(self, wake: Callable[[], None]) -> None:
        """Watch this run's locks from a thread (pg_locks.WATCH_EVERY)."""
        self.locks.watch(wake)

    def check_locks(self) -> None:
        """Raise StateError when the watcher found a lock lost for good."""
        self.locks.check()

    def runner_alive(self, run: RunRecord) -> bool:
        return self.locks.runner_alive(run)

    def pool_locks(self) -> PgPoolLocks:
        """Pool slots across hosts (flowsh.pools.RemoteSlots, docs/semantics.md POOL-8)."""
        return PgPoolLocks(self.locks)

    def close(self) -> None:
        self.conn.close()


@hookimpl
def flowsh_register_state_backends(register: Register) -> None:
    register("postgresql", PostgresBackend)
    register("postgres", PostgresBackend)  # libpq takes both spellings
