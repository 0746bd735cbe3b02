"""The table of seeded tamperings run by test_audit_tampering.py: each kind edits a copy of a
real facility's store (a `Target`) the way someone with database access would, and says what
`qtestbed audit verify --witness` must report (an `Expected`).

To add kinds, append `Tampering(...)` entries to `KINDS` (or extend it from another module
listed in `KIND_MODULES`); each gets its own test case. A kind returns what it expects: the
exact first bad entry where one can be named, else the range that must hold the change, the
finding kinds that must appear, and for job/result rows the job that must be named.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from attestation.keys import SigningKey
from broker.audit.chain import GENESIS_HASH, chain_hash
from broker.audit.checkpoints import sign_checkpoint
from broker.audit.merkle import audit_leaf, leaf_hash, root_from_hashes
from broker.audit.model import AuditEntry, AuditEvent, Checkpoint
from broker.audit.stored import entry_from_stored


@dataclass(frozen=True, kw_only=True, slots=True)
class Target:
    """A copy of the store to tamper with, and what is known about the honest one."""

    db: Path
    earlier_copy: Path  # the same store, copied while the broker was still running
    earlier_entries: int
    key: SigningKey  # the broker's key (for kinds where the attacker holds it too)
    entries: tuple[AuditEntry, ...]  # the honest log
    checkpoints: tuple[Checkpoint, ...]  # the honest store's checkpoints
    witnessed: tuple[int, ...]  # tree sizes in the witness's copy
    every_seconds: float

    def sql(self) -> closing[sqlite3.Connection]:
        conn = sqlite3.connect(self.db, isolation_level=None)
        return closing(conn)

    @property
    def n(self) -> int:
        return len(self.entries)

    def middle(self) -> int:
        """A seq inside the log, covered by a witnessed checkpoint, not the first."""
        return max(2, min(self.witnessed) // 2 + 1)

    def witnessed_below(self, seq: int) -> int:
        """The largest witnessed tree size below `seq` (0 if none): the range start."""
        return max((w for w in self.witnessed if w < seq), default=0)


@dataclass(frozen=True, kw_only=True, slots=True)
class Expected:
    first_bad: int | None = None  # exactly this seq is named
    within: tuple[int, int] | None = None  # or: the named first bad seq lies in this range
    kinds: frozenset[str] = field(default_factory=frozenset)  # these finding kinds appear
    job_id: str | None = None  # a finding names this job


@dataclass(frozen=True, kw_only=True, slots=True)
class Tampering:
    name: str
    apply: Callable[[Target], Expected]


def _update(t: Target, sql: str, params: tuple[object, ...]) -> None:
    with t.sql() as db:
        db.execute(sql, params)


def _row(t: Target, seq: int) -> AuditEntry:
    with t.sql() as db:
        row = db.execute(
            "SELECT seq, kind, actor, subject, at, detail, prev_hash, entry_hash FROM audit_log "
            "WHERE seq = ?",
            (seq,),
        ).fetchone()
    return entry_from_stored(row)


def _rechain(db: sqlite3.Connection, entries: list[AuditEntry], start: int) -> None:
    """Rewrite every entry from seq `start` with recomputed hashes, as an attacker would."""
    prev = GENESIS_HASH if start == 1 else entries[start - 2].entry_hash
    for entry in entries[start - 1 :]:
        digest = chain_hash(prev, entry.seq, entry.event)
        detail = json.dumps(entry.event.detail, sort_keys=True, separators=(",", ":"))
        db.execute(
            "UPDATE audit_log SET kind = ?, actor = ?, subject = ?, at = ?, detail = ?, "
            "prev_hash = ?, entry_hash = ? WHERE seq = ?",
            (
                entry.event.kind,
                entry.event.actor,
                entry.event.subject,
                entry.event.at,
                detail,
                prev,
                digest,
                entry.seq,
            ),
        )
        prev = digest


def _edit_and_rechain(t: Target, seq: int, *, drop_checkpoints_from: int | None) -> None:
    entries = list(t.entries)
    old = entries[seq - 1]
    forged = AuditEvent(
        kind=old.event.kind,
        actor="mallory",
        subject=old.event.subject,
        at=old.event.at,
        detail=old.event.detail,
    )
    entries[seq - 1] = AuditEntry(seq=seq, event=forged, prev_hash="", entry_hash="")
    # Hashes are recomputed from `seq`; earlier entries keep theirs.
    with t.sql() as db:
        _rechain(db, entries, seq)
        if drop_checkpoints_from is not None:
            db.execute(
                "DELETE FROM audit_checkpoints WHERE tree_size >= ?", (drop_checkpoints_from,)
            )


# --- the kinds ---------------------------------------------------------------------------


def malformed_json(t: Target) -> Expected:
    s = t.middle()
    _update(t, "UPDATE audit_log SET detail = '{\"shots\": 10' WHERE seq = ?", (s,))
    return Expected(first_bad=s, kinds=frozenset({"malformed"}))


def invalid_utf8(t: Target) -> Expected:
    s = t.middle()
    _update(t, "UPDATE audit_log SET actor = CAST(X'6d61ff6c6c' AS TEXT) WHERE seq = ?", (s,))
    return Expected(first_bad=s, kinds=frozenset({"malformed"}))


def detail_not_an_object(t: Target) -> Expected:
    s = t.middle()
    _update(t, "UPDATE audit_log SET detail = '[1, 2]' WHERE seq = ?", (s,))
    return Expected(first_bad=s, kinds=frozenset({"malformed"}))


def time_not_a_number(t: Target) -> Expected:
    s = t.middle()
    _update(t, "UPDATE audit_log SET at = 'yesterday' WHERE seq = ?", (s,))
    return Expected(first_bad=s, kinds=frozenset({"malformed"}))


def edited_actor(t: Target) -> Expected:
    s = t.middle()
    _update(t, "UPDATE audit_log SET actor = 'mallory' WHERE seq = ?", (s,))
    return Expected(first_bad=s, kinds=frozenset({"chain"}))


def edited_kind(t: Target) -> Expected:
    s = t.middle() + 1
    _update(t, "UPDATE audit_log SET kind = 'device.released' WHERE seq = ?", (s,))
    return Expected(first_bad=s, kinds=frozenset({"chain"}))


def edited_detail_value(t: Target) -> Expected:
    s = next(e.seq for e in t.entries if e.event.detail and e.seq > 1)
    detail = dict(t.entries[s - 1].event.detail)
    detail["tampered"] = True
    _update(t, "UPDATE audit_log SET detail = ? WHERE seq = ?", (json.dumps(detail), s))
    return Expected(first_bad=s, kinds=frozenset({"chain"}))


def edited_with_own_hash_recomputed(t: Target) -> Expected:
    s = t.middle()
    entry = t.entries[s - 1]
    forged = AuditEvent(
        kind=entry.event.kind,
        actor="mallory",
        subject=entry.event.subject,
        at=entry.event.at,
        detail=entry.event.detail,
    )
    digest = chain_hash(entry.prev_hash, s, forged)
    _update(t, "UPDATE audit_log SET actor = 'mallory', entry_hash = ? WHERE seq = ?", (digest, s))
    return Expected(first_bad=s, kinds=frozenset({"chain"}))


def edited_prev_hash(t: Target) -> Expected:
    s = t.middle()
    _update(t, "UPDATE audit_log SET prev_hash = ? WHERE seq = ?", ("ab" * 32, s))
    return Expected(first_bad=s, kinds=frozenset({"chain"}))


def chain_recomputed_checkpoints_kept(t: Target) -> Expected:
    s = t.middle()
    _edit_and_rechain(t, s, drop_checkpoints_from=None)
    return Expected(within=(t.witnessed_below(s) + 1, s), kinds=frozenset({"chain"}))


def chain_recomputed_checkpoints_deleted(t: Target) -> Expected:
    s = t.middle()
    _edit_and_rechain(t, s, drop_checkpoints_from=0)
    return Expected(
        within=(t.witnessed_below(s) + 1, s), kinds=frozenset({"chain", "checkpoint_deleted"})
    )


def chain_recomputed_later_checkpoints_deleted(t: Target) -> Expected:
    s = max(t.witnessed) - 1
    _edit_and_rechain(t, s, drop_checkpoints_from=s)
    return Expected(
        within=(t.witnessed_below(s) + 1, s), kinds=frozenset({"chain", "checkpoint_deleted"})
    )


def deleted_middle_entry(t: Target) -> Expected:
    s = t.middle()
    _update(t, "DELETE FROM audit_log WHERE seq = ?", (s,))
    return Expected(first_bad=s, kinds=frozenset({"chain"}))


def deleted_and_renumbered(t: Target) -> Expected:
    s = t.middle()
    with t.sql() as db:
        db.execute("DELETE FROM audit_log WHERE seq = ?", (s,))
        for seq in range(s + 1, t.n + 1):
            db.execute("UPDATE audit_log SET seq = ? WHERE seq = ?", (seq - 1, seq))
    return Expected(first_bad=s, kinds=frozenset({"chain"}))


def reordered_entries(t: Target) -> Expected:
    s = t.middle()
    with t.sql() as db:
        db.execute("UPDATE audit_log SET seq = -1 WHERE seq = ?", (s,))
        db.execute("UPDATE audit_log SET seq = ? WHERE seq = ?", (s, s + 1))
        db.execute("UPDATE audit_log SET seq = ? WHERE seq = -1", (s + 1,))
    return Expected(first_bad=s, kinds=frozenset({"chain"}))


def replayed_entry(t: Target) -> Expected:
    """Row s+1 overwritten with row s's contents (a seq cannot repeat: it is the key)."""
    s = t.middle()
    with t.sql() as db:
        db.execute(
            "UPDATE audit_log SET (kind, actor, subject, at, detail, prev_hash, entry_hash) = "
            "(SELECT kind, actor, subject, at, detail, prev_hash, entry_hash FROM audit_log "
            "WHERE seq = ?) WHERE seq = ?",
            (s, s + 1),
        )
    # The copy at s+1 was written right after s-1, exactly as if s had been inserted before
    # it: the verifier names s, the inserted-looking one; either way the change is at s or s+1.
    return Expected(within=(s, s + 1), kinds=frozenset({"chain"}))


def inserted_entry(t: Target) -> Expected:
    s = t.middle()
    prev = _row(t, s - 1)
    forged = AuditEvent(
        kind="device.released", actor="mallory", subject="sim-open", at=prev.event.at
    )
    with t.sql() as db:
        for seq in range(t.n, s - 1, -1):
            db.execute("UPDATE audit_log SET seq = ? WHERE seq = ?", (seq + 1, seq))
        db.execute(
            "INSERT INTO audit_log (seq, kind, actor, subject, at, detail, prev_hash, entry_hash)"
            " VALUES (?, ?, ?, ?, ?, '{}', ?, ?)",
            (
                s,
                forged.kind,
                forged.actor,
                forged.subject,
                forged.at,
                prev.entry_hash,
                chain_hash(prev.entry_hash, s, forged),
            ),
        )
    return Expected(first_bad=s, kinds=frozenset({"chain"}))


def tail_truncated_with_its_checkpoints(t: Target) -> Expected:
    keep = t.witnessed_below(max(t.witnessed)) + 1
    with t.sql() as db:
        db.execute("DELETE FROM audit_log WHERE seq > ?", (keep,))
        db.execute("DELETE FROM audit_checkpoints WHERE tree_size > ?", (keep,))
    return Expected(first_bad=keep + 1, kinds=frozenset({"rollback", "checkpoint_deleted"}))


def tail_truncated_checkpoints_kept(t: Target) -> Expected:
    keep = t.n - 3
    _update(t, "DELETE FROM audit_log WHERE seq > ?", (keep,))
    return Expected(first_bad=keep + 1, kinds=frozenset({"chain"}))


def whole_database_rolled_back(t: Target) -> Expected:
    t.db.write_bytes(t.earlier_copy.read_bytes())
    return Expected(
        first_bad=t.earlier_entries + 1, kinds=frozenset({"rollback", "checkpoint_deleted"})
    )


def all_checkpoints_deleted(t: Target) -> Expected:
    _update(t, "DELETE FROM audit_checkpoints WHERE tree_size > ?", (0,))
    return Expected(kinds=frozenset({"checkpoint_deleted"}))


def checkpoint_signature_edited(t: Target) -> Expected:
    size = max(t.witnessed)
    stored = next(c for c in t.checkpoints if c.tree_size == size)
    envelope = json.loads(stored.envelope)
    sig = envelope["signatures"][0]["sig"]
    envelope["signatures"][0]["sig"] = ("B" if sig[0] != "B" else "C") + sig[1:]
    _update(
        t,
        "UPDATE audit_checkpoints SET envelope = ? WHERE tree_size = ?",
        (json.dumps(envelope).encode(), size),
    )
    return Expected(kinds=frozenset({"checkpoint_altered"}))


def unwitnessed_checkpoint_signature_edited(t: Target) -> Expected:
    last = t.checkpoints[-1]
    assert last.tree_size not in t.witnessed
    envelope = json.loads(last.envelope)
    sig = envelope["signatures"][0]["sig"]
    envelope["signatures"][0]["sig"] = ("B" if sig[0] != "B" else "C") + sig[1:]
    _update(
        t,
        "UPDATE audit_checkpoints SET envelope = ? WHERE tree_size = ?",
        (json.dumps(envelope).encode(), last.tree_size),
    )
    return Expected(kinds=frozenset({"checkpoint_invalid"}))


def checkpoint_root_column_edited(t: Target) -> Expected:
    last = t.checkpoints[-1]
    _update(
        t,
        "UPDATE audit_checkpoints SET root_hash = ? WHERE tree_size = ?",
        ("cd" * 32, last.tree_size),
    )
    return Expected(kinds=frozenset({"checkpoint_invalid"}))


def forged_checkpoint(t: Target) -> Expected:
    """A checkpoint over the real log's head, signed with a key that is not the broker's."""
    last = t.checkpoints[-1]
    forged = sign_checkpoint(t.n + 5, last.root_hash, time.time(), SigningKey.generate())
    _update(
        t,
        "INSERT INTO audit_checkpoints (tree_size, root_hash, at, key_id, envelope) "
        "VALUES (?, ?, ?, ?, ?)",
        (forged.tree_size, forged.root_hash, forged.at, forged.key_id, forged.envelope),
    )
    return Expected(kinds=frozenset({"checkpoint_invalid"}))


def rewritten_and_re_signed_with_the_broker_key(t: Target) -> Expected:
    """An attacker who also holds the broker's key: an entry edited, the chain recomputed and
    every checkpoint signed again over the new history. Only the witness's copy disagrees."""
    s = t.middle()
    _edit_and_rechain(t, s, drop_checkpoints_from=0)
    with t.sql() as db:
        rows = db.execute(
            "SELECT seq, kind, actor, subject, at, detail, prev_hash, entry_hash FROM audit_log "
            "ORDER BY seq"
        ).fetchall()
        hashes = [leaf_hash(audit_leaf(entry_from_stored(row))) for row in rows]
        for old in t.checkpoints:
            root = root_from_hashes(hashes[: old.tree_size]).hex()
            new = sign_checkpoint(old.tree_size, root, old.at, t.key)
            db.execute(
                "INSERT INTO audit_checkpoints (tree_size, root_hash, at, key_id, envelope) "
                "VALUES (?, ?, ?, ?, ?)",
                (new.tree_size, new.root_hash, new.at, new.key_id, new.envelope),
            )
    return Expected(within=(t.witnessed_below(s) + 1, s), kinds=frozenset({"fork", "chain"}))


def late_entries_appended(t: Target) -> Expected:
    """Well-linked forged entries after the last checkpoint, written long after one was due."""
    last = t.entries[-1]
    at = t.checkpoints[-1].at + 10 * t.every_seconds
    prev = last.entry_hash
    with t.sql() as db:
        for seq in (t.n + 1, t.n + 2):
            event = AuditEvent(kind="device.released", actor="mallory", subject="sim-open", at=at)
            digest = chain_hash(prev, seq, event)
            db.execute(
                "INSERT INTO audit_log (seq, kind, actor, subject, at, detail, prev_hash, "
                "entry_hash) VALUES (?, ?, ?, ?, ?, '{}', ?, ?)",
                (seq, event.kind, event.actor, event.subject, event.at, prev, digest),
            )
            prev = digest
            at += 1
    return Expected(first_bad=t.n + 1, kinds=frozenset({"stale_checkpoint"}))


KINDS: list[Tampering] = [
    Tampering(name=f.__name__, apply=f)
    for f in (
        malformed_json,
        invalid_utf8,
        detail_not_an_object,
        time_not_a_number,
        edited_actor,
        edited_kind,
        edited_detail_value,
        edited_with_own_hash_recomputed,
        edited_prev_hash,
        chain_recomputed_checkpoints_kept,
        chain_recomputed_checkpoints_deleted,
        chain_recomputed_later_checkpoints_deleted,
        deleted_middle_entry,
        deleted_and_renumbered,
        reordered_entries,
        replayed_entry,
        inserted_entry,
        tail_truncated_with_its_checkpoints,
        tail_truncated_checkpoints_kept,
        whole_database_rolled_back,
        all_checkpoints_deleted,
        checkpoint_signature_edited,
        unwitnessed_checkpoint_signature_edited,
        checkpoint_root_column_edited,
        forged_checkpoint,
        rewritten_and_re_signed_with_the_broker_key,
        late_entries_appended,
    )
]
