"""The audit log's records: events as decided, entries as chained, checkpoints as signed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, kw_only=True, slots=True)
class AuditEvent:
    """A security-relevant decision, appended to the hash-chained audit log.

    `kind` is a short dotted name (`job.submitted`, `clearance.denied`, `attestation.failed`, ...).
    """

    kind: str
    actor: str
    subject: str
    at: float
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True, slots=True)
class AuditEntry:
    """An audit event as stored: its position and the chain hashes that make edits detectable."""

    seq: int
    event: AuditEvent
    prev_hash: str
    entry_hash: str


@dataclass(frozen=True, kw_only=True, slots=True)
class Checkpoint:
    """A signed statement of the audit log: its first `tree_size` entries have Merkle root
    `root_hash` (hex, RFC 6962). `envelope` is the DSSE envelope (JSON) signed by the broker."""

    tree_size: int
    root_hash: str
    at: float
    key_id: str
    envelope: bytes
