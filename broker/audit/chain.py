"""The audit log's hash chain: the exact bytes an entry hashes, and how entries link up."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

from broker.audit.model import AuditEntry, AuditEvent

GENESIS_HASH = "0" * 64


def canonical_event_bytes(event: AuditEvent) -> bytes:
    """The exact bytes the audit chain hashes: sorted-key compact JSON, so any edit shows."""
    body = {
        "kind": event.kind,
        "actor": event.actor,
        "subject": event.subject,
        # float(): stores keep `at` as a float column, so an int here would not hash the same
        # after a round trip and an honest entry would look tampered with.
        "at": float(event.at),
        "detail": event.detail,
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def chain_hash(
    prev_hash: str, seq: int, event: AuditEvent, *, canonical: bytes | None = None
) -> str:
    """entry_hash = SHA-256(prev_hash || seq || canonical event); links each entry to the last.

    `canonical`, when given, is `canonical_event_bytes(event)` already computed (a verifier
    needs it twice per entry: here and in its Merkle leaf)."""
    digest = hashlib.sha256()
    digest.update(bytes.fromhex(prev_hash))
    digest.update(seq.to_bytes(8, "big"))
    digest.update(canonical_event_bytes(event) if canonical is None else canonical)
    return digest.hexdigest()


def verify_chain(entries: Sequence[AuditEntry], prev_hash: str = GENESIS_HASH) -> int | None:
    """Return the seq of the first entry that breaks the chain, or None when all link up."""
    expected_seq = entries[0].seq if entries else 0
    for entry in entries:
        if entry.seq != expected_seq or entry.prev_hash != prev_hash:
            return entry.seq
        if chain_hash(prev_hash, entry.seq, entry.event) != entry.entry_hash:
            return entry.seq
        prev_hash = entry.entry_hash
        expected_seq += 1
    return None
