"""The queries and transactions that the SQLite and PostgreSQL stores run identically.

SQL here uses `?` placeholders and only portable syntax; a subclass supplies the connection,
its driver's error types, and the places where the databases really differ: how a migration
run, an audit append and a registry write are serialized against other processes (see
`Dialect` for the type and sequence differences).
"""

# S608 flags every f-string that builds SQL. Here only constant column lists, `?` markers and
# fixed dialect fragments are ever interpolated; all values travel as bound parameters.
# ruff: noqa: S608

from __future__ import annotations

import abc
import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from broker.access.model import QuotaCheck, check_quota
from broker.audit.chain import GENESIS_HASH, chain_hash
from broker.audit.model import AuditEntry, AuditEvent
from broker.jobs.model import Job, JobResult, JobState, check_same_request
from broker.store import changes, rows, schema
from broker.store.base import StoreError
from broker.store.cursor import Cursor
from broker.store.sql_access import SqlAccess
from broker.store.sql_parts import by_id_of
from broker.store.sql_queue import QUEUE_STATES, SqlQueue
from broker.store.sql_registry import SqlRegistry
from broker.store.sql_sessions import SqlSessions

_QUEUED = JobState.QUEUED.value
_LEASED = (JobState.DISPATCHED.value, JobState.RUNNING.value)
_JOB_FIELDS = rows.JOB_SELECT


def _marks(n: int) -> str:
    return ", ".join("?" * n)


_UPDATE_JOB = (
    "UPDATE jobs SET "
    + ", ".join(f"{col} = ?" for col in rows.JOB_COLUMNS[1:])
    + " WHERE job_id = ? AND version = ?"
)
_JOB_BY_KEY = f"SELECT {_JOB_FIELDS} FROM jobs WHERE owner = ? AND idempotency_key = ?"
_INSERT_RESULT = f"INSERT INTO results ({rows.RESULT_COLUMNS}) VALUES ({_marks(9)})"
_INSERT_AUDIT = f"INSERT INTO audit_log ({rows.AUDIT_COLUMNS}) VALUES ({_marks(8)})"


class SqlStore(SqlRegistry, SqlAccess, SqlSessions, SqlQueue):
    """Implements the `Store` and `RegistryStore` protocols on top of `_cursor()`; subclasses
    own the connection. The registry operations live in `broker.store.sql_registry`."""

    _dialect: schema.Dialect
    _db_errors: tuple[type[Exception], ...]
    replicated: bool

    @abc.abstractmethod
    def _cursor(self) -> Cursor:
        """A cursor on a live connection in autocommit mode; StoreError once closed."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the connection; any later call raises StoreError."""

    @abc.abstractmethod
    def _describe(self, exc: Exception) -> str:
        """An error message naming the database (never a password)."""

    @abc.abstractmethod
    def _before_migrate(self, cur: Cursor) -> None:
        """Runs first in the migration transaction: keep concurrent migrations apart."""

    @abc.abstractmethod
    def _lock_audit(self, cur: Cursor) -> None:
        """Runs first in every write (`_transaction`), so before any audit head is read: keeps
        concurrent appends from forking the chain."""

    def _announce(self, cur: Cursor, topic: str) -> None:
        """Nothing to tell: no other process shares this store (PostgreSQL overrides this)."""

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except self._db_errors as exc:
            raise StoreError(self._describe(exc)) from exc

    _batch_depth: int = 0

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Group commit: every write inside shares one transaction (and one fsync).

        Each write becomes a savepoint, so one that fails rolls back alone; nothing inside
        is durable until the batch commits, so callers acknowledge only after it returns.
        """
        if self._batch_depth:
            yield
            return
        with self._errors():
            cur = self._cursor()
            cur.execute(self._dialect.begin)
            self._batch_depth = 1
            try:
                yield
                cur.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(*self._db_errors):
                    cur.execute("ROLLBACK")
                raise
            finally:
                self._batch_depth = 0

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Cursor]:
        """One write transaction: committed on normal exit, rolled back on any exception.

        Inside `batch()` it is a savepoint of the batch's transaction instead.

        Every write takes the audit lock before it touches a row or takes a lock of its own
        (PostgreSQL; SQLite's single writer needs none): group commit puts many writes in one
        transaction in call order, so a write that locked a row (or a queue's book) before
        waiting for the audit lock could wait for another process's transaction that holds
        the audit lock and waits for that row. With the audit lock first, a transaction
        holding any other lock of these holds the audit lock too, and none can wait in a cycle.
        """
        with self._errors():
            cur = self._cursor()
            begin, commit, rollback = self._dialect.begin, "COMMIT", "ROLLBACK"
            if self._batch_depth:
                begin, commit, rollback = (
                    "SAVEPOINT w",
                    "RELEASE SAVEPOINT w",
                    "ROLLBACK TO SAVEPOINT w",
                )
            cur.execute(begin)
            try:
                self._lock_audit(cur)
                yield cur
                cur.execute(commit)
            except BaseException:
                # The connection may be gone; the original error is the one worth raising.
                with contextlib.suppress(*self._db_errors):
                    cur.execute(rollback)
                    if self._batch_depth:
                        cur.execute("RELEASE SAVEPOINT w")
                raise

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._errors():
            cur = self._cursor()
            cur.execute(sql, params)
            return cur.fetchall()

    def migrate(self) -> None:
        self.upgrade()

    def upgrade(self) -> list[schema.Migration]:
        """Apply every pending migration in one transaction; the ones applied, oldest first."""
        return self._migrate_with(schema.pending)

    def open_schema(self) -> None:
        self._migrate_with(schema.to_serve)

    def schema_version(self) -> int:
        """The newest migration applied (0: an empty database)."""
        with self._transaction() as cur:
            self._before_migrate(cur)
            return self._current_version(cur)

    def _migrate_with(
        self, choose: Callable[[int], list[schema.Migration]]
    ) -> list[schema.Migration]:
        with self._transaction() as cur:
            self._before_migrate(cur)
            chosen = choose(self._current_version(cur))
            for migration in chosen:
                for stmt in migration.sql(self._dialect):
                    cur.execute(stmt)
                cur.execute(
                    "INSERT INTO schema_migrations (version, description, applied_at)"
                    " VALUES (?, ?, ?)",
                    (migration.version, migration.description, time.time()),
                )
            return chosen

    def _current_version(self, cur: Cursor) -> int:
        cur.execute(schema.BOOTSTRAP.format_map(self._dialect.types))
        cur.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
        return int(cur.fetchone()[0])

    def insert_job(
        self, job: Job, event: AuditEvent, quota: QuotaCheck | None = None
    ) -> tuple[Job, bool]:
        with self._transaction() as cur:
            return self._insert_one(cur, job, event, quota)

    def insert_jobs(
        self, items: Sequence[tuple[Job, AuditEvent, QuotaCheck | None]]
    ) -> list[tuple[Job, bool]]:
        """`insert_job` for several jobs in one transaction: all are stored, or none is."""
        with self._transaction() as cur:
            return [self._insert_one(cur, job, event, quota) for job, event, quota in items]

    def _insert_one(
        self, cur: Cursor, job: Job, event: AuditEvent, quota: QuotaCheck | None
    ) -> tuple[Job, bool]:
        self._serialize(cur, "queue")  # after the audit lock, as every serialized write
        sql = (
            f"INSERT INTO jobs (seq, {_JOB_FIELDS})"
            f" VALUES ({self._dialect.job_seq}, {_marks(len(rows.JOB_COLUMNS))})"
            " ON CONFLICT (owner, idempotency_key) DO NOTHING"
        )
        cur.execute(sql, rows.job_to_row(job))
        if cur.rowcount == 1:
            self._announce(cur, changes.jobs(job.device_id))
            # After the append: it holds the audit lock, which every job insert of every
            # replica takes, so the counts below see all other committed inserts.
            self._append(cur, event)
            if quota is not None:
                self._check_quota(quota, job.shots)
            self._queue_change(cur, None, job)
            return job, True
        # Only a duplicate (owner, idempotency_key) skips the insert; a NULL key never does.
        cur.execute(_JOB_BY_KEY, (job.owner, job.idempotency_key))
        return check_same_request(rows.job_from_row(cur.fetchone()), job), False

    def _check_quota(self, quota: QuotaCheck, shots: int) -> None:
        """Raises QuotaExceeded inside the insert's transaction, which then writes nothing."""
        for scope, name, limits in (
            ("principal", quota.owner, quota.owner_quota),
            ("project", quota.project, quota.project_quota),
        ):
            if limits.limited:
                usage = self.job_usage(
                    owner=name if scope == "principal" else None,
                    project=name if scope == "project" else None,
                    since=quota.since,
                )
                check_quota(scope, name, limits, usage, shots=shots)

    def save_job(
        self,
        job: Job,
        *,
        expected_version: int,
        event: AuditEvent | None = None,
        result: JobResult | None = None,
    ) -> bool:
        # A save that does not raise the version would let a second writer's CAS succeed too.
        if job.version <= expected_version:
            raise ValueError(f"job {job.job_id}: version {job.version} must exceed the expected")
        if result is not None and result.job_id != job.job_id:
            raise ValueError(f"result for {result.job_id} saved with job {job.job_id}")
        with self._transaction() as cur:
            before = None
            if job.state in QUEUE_STATES:  # the write may move a lane: read what it was
                self._serialize(cur, "queue")
                cur.execute(
                    "SELECT state FROM jobs WHERE job_id = ? AND version = ?",
                    (job.job_id, expected_version),
                )
                found = cur.fetchone()
                before = JobState(found[0]) if found else None
            if not self._update(cur, job, expected_version):
                return False
            self._announce(cur, changes.jobs(job.device_id))
            if result is not None:
                cur.execute(_INSERT_RESULT, rows.result_to_row(result))
            if event is not None:
                self._append(cur, event)
            if job.state in QUEUE_STATES:
                self._queue_change(cur, before, job)
        return True

    def _update(self, cur: Cursor, job: Job, expected_version: int) -> bool:
        cur.execute(_UPDATE_JOB, (*rows.job_to_row(job)[1:], job.job_id, expected_version))
        return cur.rowcount == 1

    def get_job(self, job_id: str, *, owner: str | None = None) -> Job | None:
        found = self._query(
            *by_id_of(f"SELECT {_JOB_FIELDS} FROM jobs WHERE job_id = ?", job_id, owner)
        )
        return rows.job_from_row(found[0]) if found else None

    def get_jobs(self, keys: Sequence[tuple[str, str | None]]) -> list[Job | None]:
        return [self.get_job(job_id, owner=owner) for job_id, owner in keys]

    def job_by_idempotency_key(self, owner: str, key: str) -> Job | None:
        found = self._query(_JOB_BY_KEY, (owner, key))
        return rows.job_from_row(found[0]) if found else None

    def list_jobs(
        self,
        *,
        owner: str | None = None,
        device_id: str | None = None,
        states: Sequence[JobState] = (),
        limit: int = 100,
        before_seq: int | None = None,
    ) -> list[tuple[int, Job]]:
        if limit < 0:
            raise ValueError("limit must not be negative")
        clauses: list[str] = ["1 = 1"]
        params: list[Any] = []
        for column, value in (("owner", owner), ("device_id", device_id)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if states:
            clauses.append(f"state IN ({_marks(len(states))})")
            params.extend(state.value for state in states)
        if before_seq is not None:
            clauses.append("seq < ?")
            params.append(before_seq)
        # Only fixed fragments and `?` markers are interpolated; every value is a parameter.
        sql = (
            f"SELECT seq, {_JOB_FIELDS} FROM jobs WHERE {' AND '.join(clauses)}"
            " ORDER BY seq DESC LIMIT ?"
        )
        found = self._query(sql, (*params, limit))
        return [(int(row[0]), rows.job_from_row(row[1:])) for row in found]

    def queued_jobs(self, device_id: str, limit: int) -> list[Job]:
        found = self._query(
            f"SELECT {_JOB_FIELDS} FROM jobs WHERE device_id = ? AND state = ?"
            " ORDER BY seq LIMIT ?",
            (device_id, _QUEUED, limit),
        )
        return [rows.job_from_row(row) for row in found]

    def leased_jobs(self) -> list[Job]:
        found = self._query(
            f"SELECT {_JOB_FIELDS} FROM jobs WHERE state IN (?, ?) ORDER BY seq", _LEASED
        )
        return [rows.job_from_row(row) for row in found]

    def replica_alive(self, replica_id: str) -> bool:
        """False: no other process shares this store (PostgreSQL overrides this)."""
        return False

    def get_result(self, job_id: str) -> JobResult | None:
        found = self._query(
            f"SELECT {rows.RESULT_COLUMNS} FROM results WHERE job_id = ?", (job_id,)
        )
        return rows.result_from_row(found[0]) if found else None

    def append_audit(self, event: AuditEvent) -> AuditEntry:
        with self._transaction() as cur:
            return self._append(cur, event)

    def audit_entries(self, *, after_seq: int = 0, limit: int = 1000) -> list[AuditEntry]:
        found = self._query(
            f"SELECT {rows.AUDIT_COLUMNS} FROM audit_log WHERE seq > ? ORDER BY seq LIMIT ?",
            (after_seq, limit),
        )
        return [rows.audit_from_row(row) for row in found]

    # How a verifier reads rows it does not trust: text as stored, never decoded by the driver
    # (SQLite overrides this to hand over bytes, so invalid UTF-8 is seen rather than raised).
    _RAW_AUDIT_SELECT = f"SELECT {rows.AUDIT_COLUMNS} FROM audit_log"

    def audit_rows(self, *, after_seq: int = 0, limit: int = 1000) -> list[tuple[Any, ...]]:
        """Audit rows as stored, for `broker.audit.stored` to decode without trusting them."""
        found = self._query(
            f"{self._RAW_AUDIT_SELECT} WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, limit)
        )
        return [tuple(row) for row in found]

    def _append(self, cur: Cursor, event: AuditEvent) -> AuditEntry:
        """Link `event` after the current head, inside the caller's write transaction, which
        took the audit lock first (`_transaction`): the head read here stays the head."""
        cur.execute("SELECT seq, entry_hash FROM audit_log ORDER BY seq DESC LIMIT 1")
        head = cur.fetchone()
        prev_seq, prev_hash = (int(head[0]), str(head[1])) if head else (0, GENESIS_HASH)
        seq = prev_seq + 1
        entry = AuditEntry(
            seq=seq, event=event, prev_hash=prev_hash, entry_hash=chain_hash(prev_hash, seq, event)
        )
        cur.execute(_INSERT_AUDIT, rows.audit_to_row(entry))
        return entry
