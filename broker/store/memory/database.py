"""The tables of an in-memory store: one `MemoryDatabase` per database, shareable.

Several `MemoryStore`s opened on one `MemoryDatabase` behave like several connections to one
SQLite file: each sees what the others committed, one write transaction runs at a time (the
database's lock), and closing a store leaves the data to the others. Nothing is durable beyond
the object's life.

Stored values are immutable. The JSON-shaped parts of domain objects (an audit event's detail,
an access record's document) are kept as canonical JSON text, as the SQL stores keep them, so
the same values are refused (TypeError) and the same values come back: fresh on every read.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from broker.access.model import RecordKind
from broker.audit.model import Checkpoint
from broker.devices.model import (
    AttestationRecord,
    DeviceRecord,
    ReferenceScope,
    ReferenceValuesRecord,
    Revocation,
)
from broker.jobs.model import Job, JobResult
from broker.jobs.session_model import Session
from broker.store.memory.journal import Journal, Table


@dataclass(frozen=True, kw_only=True, slots=True)
class JobRow:
    """A job and its place in submission order (`seq`, never reused once committed)."""

    seq: int
    job: Job


@dataclass(frozen=True, kw_only=True, slots=True)
class AuditRow:
    """An audit entry as stored: the event's detail as the canonical JSON that was hashed."""

    seq: int
    kind: str
    actor: str
    subject: str
    at: float
    detail: str
    prev_hash: str
    entry_hash: str


@dataclass(frozen=True, kw_only=True, slots=True)
class AccessRow:
    """An access record as stored: its document as canonical JSON."""

    kind: RecordKind
    name: str
    doc: str
    version: int
    updated_at: float
    updated_by: str


class MemoryDatabase:
    """Every table, the undo journal of the open transaction, and the lock that makes one
    thread at a time use them."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.journal = Journal()
        self.batching = False  # a `batch()` transaction is open: writes become savepoints
        journal = self.journal
        # Counters: "schema" (1 once migrated) and the sequences below.
        self.meta: Table[str, int] = Table(journal)
        self.jobs: Table[str, JobRow] = Table(journal)
        self.job_keys: Table[tuple[str, str], str] = Table(journal)  # (owner, key) -> job_id
        self.results: Table[str, JobResult] = Table(journal)
        self.audit: Table[int, AuditRow] = Table(journal)
        self.devices: Table[str, DeviceRecord] = Table(journal)
        self.references: Table[tuple[ReferenceScope, str], tuple[ReferenceValuesRecord, ...]] = (
            Table(journal)
        )  # newest version first
        self.revocations: Table[str, Revocation] = Table(journal)
        self.attestations: Table[int, AttestationRecord] = Table(journal)
        self.checkpoints: Table[int, Checkpoint] = Table(journal)  # by tree size
        self.access: Table[tuple[RecordKind, str], AccessRow] = Table(journal)
        self.sessions: Table[str, Session] = Table(journal)
        # The queue book (broker.store.memory.queue): (device, project) -> (head, tail, last
        # tag); (device, project, ordinal) -> tag; device -> virtual time.
        self.queue_lanes: Table[tuple[str, str], tuple[int, int, float]] = Table(journal)
        self.queue_slots: Table[tuple[str, str, int], float] = Table(journal)
        self.queue_clocks: Table[str, float] = Table(journal)

    def next_value(self, sequence: str) -> int:
        """The next number of `sequence` (1 first), taken back if the transaction fails."""
        value = (self.meta.get(sequence) or 0) + 1
        self.meta.put(sequence, value)
        return value
