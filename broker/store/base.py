"""The storage port: one contract, implemented by SQLite (embedded default) and PostgreSQL.

Stores are synchronous and are driven from one dedicated thread per store by the broker
(`broker.store.runner`), which keeps blocking I/O off the event loop. Every write that changes
a job also appends its audit event in the same transaction, so a job never exists without the
record of how it got there.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from broker.access.model import AccessRecord, QuotaCheck, RecordKind, Usage
from broker.audit.model import AuditEntry, AuditEvent, Checkpoint
from broker.devices.model import (
    AttestationRecord,
    DeviceRecord,
    ReferenceScope,
    ReferenceValuesRecord,
    Revocation,
)
from broker.jobs.model import Job, JobResult, JobState, QueueLane
from broker.jobs.session_model import Session


class StoreError(Exception):
    """The store could not do what was asked (connection lost, schema too new, ...)."""


class CheckpointSuperseded(StoreError):
    """A checkpoint was not stored because one of the same or a larger tree size already was
    (another broker process signed first): the entries are covered either way."""


class Store(Protocol):
    """Durable jobs, results and the audit chain."""

    # Whether other broker processes may write to the same database (PostgreSQL), so a check
    # that must see their writes at once reads the store rather than this process's snapshot.
    replicated: bool

    def migrate(self) -> None:
        """Create or upgrade the schema to the version this code expects; idempotent."""

    def open_schema(self) -> None:
        """What a starting broker calls: create the schema in an empty store; raise StoreError
        for one at another version (`SchemaBehind` when `qtestbed migrate` would upgrade it)."""

    def close(self) -> None: ...

    def batch(self) -> AbstractContextManager[None]:
        """Group commit: the writes made inside share one transaction, durable on exit."""

    def insert_job(
        self, job: Job, event: AuditEvent, quota: QuotaCheck | None = None
    ) -> tuple[Job, bool]:
        """Persist a new QUEUED job and its audit event atomically, durable before returning.

        When the owner already has a job with the same idempotency key, nothing is written and
        `(existing_job, False)` is returned if it is the same request (device, circuit digest,
        shots), `IdempotencyKeyReused` raised if not; otherwise `(job, True)`. With `quota`, the
        usage of the owner and the project (this job included) is counted in the same
        transaction, after the audit lock, and `QuotaExceeded` is raised, writing nothing, when
        over.
        """

    def insert_jobs(
        self, items: Sequence[tuple[Job, AuditEvent, QuotaCheck | None]]
    ) -> list[tuple[Job, bool]]:
        """`insert_job` for each item in one transaction: all are stored or, if any raises
        (QuotaExceeded included), none is."""

    def save_job(
        self,
        job: Job,
        *,
        expected_version: int,
        event: AuditEvent | None = None,
        result: JobResult | None = None,
    ) -> bool:
        """Compare-and-set: write `job` only if the stored version is still `expected_version`.

        The audit event and the result (if any) are written in the same transaction. Returns
        False, writing nothing, when another writer got there first.
        """

    def get_job(self, job_id: str, *, owner: str | None = None) -> Job | None:
        """The job, or None; with `owner`, None also when someone else owns it, decided in the
        same read, so someone else's job costs what a missing one does (nothing is decoded)."""

    def get_jobs(self, keys: Sequence[tuple[str, str | None]]) -> list[Job | None]:
        """`get_job(job_id, owner=owner)` for each (job id, owner), read together."""

    def job_by_idempotency_key(self, owner: str, key: str) -> Job | None:
        """The owner's job stored under the idempotency key, or None."""

    def list_jobs(
        self,
        *,
        owner: str | None = None,
        device_id: str | None = None,
        states: Sequence[JobState] = (),
        limit: int = 100,
        before_seq: int | None = None,
    ) -> list[tuple[int, Job]]:
        """Jobs newest first as (seq, job); `before_seq` pages backwards from a previous page."""

    def queued_jobs(self, device_id: str, limit: int) -> list[Job]:
        """The device's QUEUED jobs in FIFO order (submission order), oldest first."""

    def queue_depths(self) -> dict[str, int]:
        """Number of QUEUED jobs per device (devices with none are absent), from the lanes."""

    # The queue book (broker.store.sql_queue): changed by every job write that queues a job
    # or takes one out of the queue, in the same transaction; read by index.

    def queue_lanes(self) -> list[QueueLane]:
        """Every (device, project) lane with its slot ordinals."""

    def queue_jobs(
        self, device_id: str, project: str, *, after: tuple[float, str] | None, limit: int
    ) -> list[Job]:
        """A lane's QUEUED jobs in place order (place_at, job id), after the key `after`."""

    def queue_tags(self, device_id: str, project: str, first: int, limit: int) -> list[float]:
        """A lane's slot tags from ordinal `first` on, in ordinal order."""

    def queued_sessions(self) -> dict[tuple[str, str], list[str]]:
        """Ids of the QUEUED jobs that have a session, by (device, session)."""

    def queue_session_head(
        self, device_id: str, project: str, session_id: str
    ) -> tuple[Job, float] | None:
        """The lane's first QUEUED job of the session (place order) and its slot's tag."""

    def queue_position(self, job: Job) -> int | None:
        """The job's 1-based place in its device's run order; None when it is not queued."""

    def queue_positions(self, device_id: str, jobs: Sequence[Job]) -> dict[str, int | None]:
        """`queue_position` of each of these jobs of one device, by job id, read together."""

    def replica_alive(self, replica_id: str) -> bool:
        """Whether another broker replica with this id is running on this store now."""

    def leased_jobs(self) -> list[Job]:
        """All DISPATCHED or RUNNING jobs (used to reap expired leases and on restart)."""

    def get_result(self, job_id: str) -> JobResult | None: ...

    def append_audit(self, event: AuditEvent) -> AuditEntry:
        """Append one event that changes no job (attestation verdicts, denials at submit...)."""

    def audit_entries(self, *, after_seq: int = 0, limit: int = 1000) -> list[AuditEntry]: ...

    def audit_rows(self, *, after_seq: int = 0, limit: int = 1000) -> list[tuple[Any, ...]]:
        """Audit rows as stored (seq, kind, actor, subject, at, detail, prev_hash, entry_hash),
        undecoded, for verifiers that must not trust them (`broker.audit.stored`)."""


class RegistryStore(Protocol):
    """Operator-managed device security state and audit checkpoints (same database).

    Every write that changes security state also appends its audit event in the same
    transaction, exactly as job writes do.
    """

    def save_device(
        self, record: DeviceRecord, *, expected_version: int | None, event: AuditEvent
    ) -> bool:
        """Insert (expected_version None; False if the id exists) or compare-and-set update
        (False when the stored version is not `expected_version`)."""

    def get_device(self, device_id: str) -> DeviceRecord | None: ...

    def list_devices(self) -> list[DeviceRecord]:
        """All registered devices, by device id."""

    def add_reference_values(
        self, record: ReferenceValuesRecord, event: AuditEvent
    ) -> ReferenceValuesRecord:
        """Store a new version for (scope, scope_id); the store assigns version = latest + 1
        (1 for the first) and returns the stored record."""

    def reference_values(self, scope: ReferenceScope, scope_id: str) -> list[ReferenceValuesRecord]:
        """Every version for (scope, scope_id), newest first."""

    def add_revocation(self, revocation: Revocation, event: AuditEvent) -> bool:
        """Record a revoked serial; False (nothing written) if that serial is already revoked."""

    def revocations(self) -> list[Revocation]:
        """All revocations, oldest first."""

    def registry_fingerprint(self) -> tuple[int, int, int, int]:
        """A value that changes whenever a device record, revocation or reference version is
        written (cheap to poll: what a replica compares to see another's registry changes)."""

    def add_attestation(self, record: AttestationRecord, event: AuditEvent) -> None: ...

    def attestation_history(self, device_id: str, limit: int = 100) -> list[AttestationRecord]:
        """The device's appraisals, newest first."""

    def add_checkpoint(self, checkpoint: Checkpoint) -> None:
        """Store a signed checkpoint; tree sizes only grow (StoreError otherwise)."""

    def checkpoints(self) -> list[Checkpoint]:
        """All checkpoints, smallest tree first."""


class AccessStore(Protocol):
    """Operator-managed access records and the job usage that quotas count (same database)."""

    def put_access(
        self, record: AccessRecord, *, expected_version: int | None, event: AuditEvent
    ) -> bool:
        """Insert (expected_version None; False if (kind, name) exists) or compare-and-set
        update (False when the stored version is not `expected_version`), with its audit event."""

    def delete_access(
        self, kind: RecordKind, name: str, *, expected_version: int, event: AuditEvent
    ) -> bool:
        """Delete if the stored version is `expected_version`; False (nothing written) if not."""

    def access_record(self, kind: RecordKind, name: str) -> AccessRecord | None:
        """One record as stored now (the edge's check of a revocation another replica made)."""

    def access_records(self, kind: RecordKind | None = None) -> list[AccessRecord]:
        """Every record (of one kind), by kind and name."""

    def access_fingerprint(self) -> tuple[int, int, float]:
        """A value that changes whenever any access record changes."""

    def job_usage(self, *, owner: str | None, project: str | None, since: float) -> Usage:
        """Active jobs, and shots submitted since `since` (jobs never run are not counted)."""


class SessionStore(Protocol):
    """Sessions: at most one open per device, enforced by the store."""

    def insert_session(self, session: Session, event: AuditEvent) -> bool:
        """Store a new open session with its audit event; False (nothing written) if the device
        already has an open session."""

    def save_session(
        self, session: Session, *, expected_version: int, event: AuditEvent | None = None
    ) -> bool:
        """Compare-and-set update; False when the stored version is not `expected_version`."""

    def get_session(self, session_id: str, *, owner: str | None = None) -> Session | None:
        """The session, or None; with `owner`, None also when someone else owns it (as
        `get_job`)."""

    def list_sessions(
        self,
        *,
        owner: str | None = None,
        device_id: str | None = None,
        include_closed: bool = False,
    ) -> list[Session]:
        """Sessions (open ones only unless `include_closed`), oldest first."""


class BrokerStore(Store, RegistryStore, AccessStore, SessionStore, Protocol):
    """Everything the broker keeps: jobs, results, the audit chain, device security state and
    access records."""
