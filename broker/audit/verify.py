"""Verify the audit log: its hash chain, and its Merkle roots against signed checkpoints.

This is the log check; `broker.audit.verification` runs it over a whole store together with
the other checks (missing or stale checkpoints, a witness's copy, and any check added to its
`CHECKS` list), each producing named findings. Rows are decoded without trusting them
(`broker.audit.stored`): a malformed row is a bad entry (`add_malformed`), never an exception.

Threat model: someone who can read and write the broker's database (SQL access, a stolen
backup, a rogue DBA) but does not hold the broker's private key. The verifier holds the
broker's public key from its certificate, obtained out of band.

What such an attacker cannot hide (`verify_log` reports it):

* Editing any stored field of an entry (seq, kind, actor, subject, at, detail, prev_hash,
  entry_hash) without recomputing the hashes of every later entry: the chain breaks at that
  entry, and `first_bad_seq` names it exactly.
* Deleting entries anywhere except at the very end (a seq gap or a broken link), inserting
  entries before existing ones, duplicating or reordering entries: named exactly.
* Editing an entry and recomputing the whole chain after it, when a surviving checkpoint covers
  the entry: the first checkpoint covering it no longer matches. The entry lies between the
  previous matching checkpoint and that one; nothing narrower can be known, since the original
  entries are gone. `first_bad_seq` is then the first seq after the previous matching
  checkpoint and `suspect_range` the interval.
* Truncating the log below a surviving checkpoint's tree size ("entries after seq N are
  missing").
* Forging or altering checkpoints (bad signature, wrong payload type or key, columns that
  disagree with the signed payload), and checkpoints whose tree sizes do not grow.

What it can hide:

* Anything in the unprotected tail, the entries after the last checkpoint (`unprotected_tail`
  counts them): they are protected by the hash chain only, which anyone can recompute. Editing
  a tail entry and rehashing everything after it, deleting entries from the end, or appending
  well-linked forged entries all go unseen by this check.
* Worse, the broker certifies what it reads: the checkpointer reads new entries from the
  database, so a forgery made before it reads them (one feed interval), or made in the tail
  while the broker was down (it re-reads the tail on start), is signed into the next
  checkpoint. A checkpoint at shutdown leaves no tail to forge across a restart.
* Deleting checkpoints. They live in the same database, so deleting the newest ones widens the
  unprotected tail and re-opens it to rewriting; rolling the whole database back to an earlier
  backup removes later entries and their checkpoints together. Only a checkpoint kept
  elsewhere catches this: a witness (`qtestbed audit witness`) keeps cosigned copies, and
  `broker.audit.verification.verify_audit` merges them with the stored ones (`verify_log`
  takes checkpoints from any source).
* Anything done with the broker's private key.

Reading the verdict:

* `first_bad_seq` is exact when the chain breaks: it names the changed, missing or inserted
  entry. An entry whose own hash was recomputed shows as a broken link to its successor; the
  earlier entry of that link is named (if instead the successor's link was the thing
  rewritten, `suspect_range` still covers it).
* When only a checkpoint fails (the chain was recomputed), `first_bad_seq` is the first seq
  after the last matching checkpoint and `suspect_range` runs to the failing checkpoint's tree
  size: the original entries are gone, so nothing narrower can be known.
* `suspect_range` holds the first changed entry whenever the entries come in seq order with
  unique seqs (as the stores return them: seq is the primary key), even against an attacker
  who rewrote earlier entries with recomputed hashes and then broke the chain later on
  purpose: it starts right after `verified_through`. Entries 1 to `verified_through` are
  exactly what a signed checkpoint committed to, and their chain links hold.
"""

from __future__ import annotations

import datetime as dt
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from attestation.keys import VerifyKey
from broker.audit.chain import GENESIS_HASH, canonical_event_bytes, chain_hash
from broker.audit.checkpoints import verify_checkpoint
from broker.audit.merkle import MerkleBuilder, audit_leaf, is_hash_hex, leaf_hash
from broker.audit.model import AuditEntry, Checkpoint
from broker.audit.stored import MalformedRow

# How many recent entry hashes are remembered to recognise an inserted run of entries.
RECENT_WINDOW = 4096
# Chain breaks listed one by one in `problems`; the rest are counted in one sentence.
MAX_LISTED_BREAKS = 10


@dataclass(frozen=True, kw_only=True, slots=True)
class LogVerdict:
    """The outcome of verifying an audit log; `problems` are sentences naming seq numbers."""

    ok: bool
    first_bad_seq: int | None
    problems: list[str]
    entries_checked: int
    checkpoints_checked: int
    unprotected_tail: int
    verified_through: int = 0
    suspect_range: tuple[int, int] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "first_bad_seq": self.first_bad_seq,
            "suspect_range": list(self.suspect_range) if self.suspect_range else None,
            "verified_through": self.verified_through,
            "entries_checked": self.entries_checked,
            "checkpoints_checked": self.checkpoints_checked,
            "unprotected_tail": self.unprotected_tail,
            "problems": list(self.problems),
        }


def verify_log(
    entries: Iterable[AuditEntry | MalformedRow], checkpoints: Sequence[Checkpoint], key: VerifyKey
) -> LogVerdict:
    """Verify the whole log from seq 1, in seq order, against `checkpoints` signed by `key`."""
    verifier = LogVerifier(checkpoints, key)
    verifier.add_all(entries)
    return verifier.finish()


class AuditSource(Protocol):
    def audit_entries(self, *, after_seq: int = 0, limit: int = 1000) -> list[AuditEntry]: ...


def iter_entries(
    store: AuditSource, *, after_seq: int = 0, page: int = 1000
) -> Iterator[AuditEntry]:
    """Every entry after `after_seq`, read a page at a time (constant memory)."""
    while True:
        batch = store.audit_entries(after_seq=after_seq, limit=page)
        yield from batch
        if len(batch) < page:
            return
        after_seq = batch[-1].seq


def describe_checkpoint(number: int, checkpoint: Checkpoint) -> str:
    """'checkpoint #3 (tree size 300, signed 2025-01-01T00:00:00+00:00)'."""
    try:
        when = dt.datetime.fromtimestamp(checkpoint.at, dt.UTC).isoformat(timespec="seconds")
    except (OverflowError, OSError, ValueError):
        when = repr(checkpoint.at)
    return f"checkpoint #{number} (tree size {checkpoint.tree_size}, signed {when})"


@dataclass(slots=True)
class _Break:
    seq: int  # the entry named as bad
    seen_at: int  # the seq of the entry whose check failed


@dataclass(slots=True)
class _RootMismatch:
    low: int
    high: int


@dataclass(slots=True)
class _ChainState:
    expected_seq: int = 1
    prev_hash: str = GENESIS_HASH
    prev_seq: int = 0
    recent: OrderedDict[str, int] = field(default_factory=lambda: OrderedDict({GENESIS_HASH: 0}))


class LogVerifier:
    """Streaming verification: feed entries in order with `add`, then call `finish` once.

    Memory is O(log n) for the Merkle state plus a bounded window of recent hashes, so a log
    of any length can be checked while paging it out of the store.
    """

    def __init__(self, checkpoints: Sequence[Checkpoint], key: VerifyKey) -> None:
        self._problems: list[str] = []
        self._checkpoints_checked = len(checkpoints)
        self._chain = _ChainState()
        self._builder = MerkleBuilder()
        self._count = 0
        self._last_seq = 0
        self._breaks: list[_Break] = []
        self._matched_size = 0
        self._mismatch: _RootMismatch | None = None
        self._later_mismatches = 0
        valid = self._valid_checkpoints(checkpoints, key)
        self._max_size = max((c.tree_size for _, c in valid), default=0)
        self._pending = deque(sorted(valid, key=lambda item: item[1].tree_size))
        self._check_pending()

    def _valid_checkpoints(
        self, checkpoints: Sequence[Checkpoint], key: VerifyKey
    ) -> list[tuple[int, Checkpoint]]:
        valid: list[tuple[int, Checkpoint]] = []
        for number, checkpoint in enumerate(checkpoints, start=1):
            found = verify_checkpoint(checkpoint, key)
            name = describe_checkpoint(number, checkpoint)
            if found:
                self._problems.extend(f"{name} is not valid: {p}" for p in found)
                continue
            if valid and checkpoint.tree_size <= valid[-1][1].tree_size:
                before = describe_checkpoint(*valid[-1])
                self._problems.append(
                    f"{name} does not grow past {before}: tree sizes must only grow "
                    "(two signed heads of one size mean the log was forked or restored)"
                )
            valid.append((number, checkpoint))
        return valid

    @property
    def tree_size(self) -> int:
        return self._builder.size

    @property
    def last_seq(self) -> int:
        return self._last_seq

    @property
    def problems(self) -> list[str]:
        return list(self._problems)

    def root(self) -> bytes:
        """The Merkle root over every entry added so far."""
        return self._builder.root()

    def expect(self, number: int, checkpoint: Checkpoint) -> None:
        """Also check `checkpoint` (already known to be valid), made after construction.

        Its tree size must not be below the entries already added: that prefix is gone.
        """
        if checkpoint.tree_size < self._builder.size:
            raise ValueError(
                f"checkpoint of tree size {checkpoint.tree_size} is behind the "
                f"{self._builder.size} entries already checked"
            )
        if self._pending and checkpoint.tree_size < self._pending[-1][1].tree_size:
            raise ValueError("checkpoints must be expected in order of tree size")
        self._pending.append((number, checkpoint))
        self._max_size = max(self._max_size, checkpoint.tree_size)
        self._check_pending()

    def first_bad_seq(self) -> int | None:
        """The first bad seq found so far (None while everything checks)."""
        return self._first_bad(list(self._breaks))[0]

    def pending_beyond(self) -> int:
        """The largest checkpointed tree size not yet reached by the entries (0 if none)."""
        return max((c.tree_size for _, c in self._pending), default=0)

    def add_all(self, entries: Iterable[AuditEntry | MalformedRow]) -> None:
        for entry in entries:
            if isinstance(entry, MalformedRow):
                self.add_malformed(entry)
            else:
                self.add(entry)

    def add_malformed(self, row: MalformedRow) -> None:
        """A stored row that is not an entry (bad JSON, bad UTF-8, a mistyped column): a bad
        entry named by its seq. Its stored entry hash, if readable, still links the next."""
        self._count += 1
        self._last_seq = row.seq
        self._breaks.append(_Break(seq=row.seq, seen_at=row.seq))
        if len(self._breaks) <= MAX_LISTED_BREAKS:
            self._problems.append(f"seq {row.seq} is malformed: {row.problem}")
        state = self._chain
        state.expected_seq = row.seq + 1
        state.prev_hash = row.entry_hash or ""
        state.prev_seq = row.seq
        # No leaf can be derived; any checkpoint over it then fails to match, as it should.
        self._builder.append_hash(leaf_hash(b"malformed row " + row.problem.encode()))
        self._check_pending()

    def add(self, entry: AuditEntry) -> None:
        self._count += 1
        self._last_seq = entry.seq
        canonical = _canonical(entry)  # once: the chain hash and the Merkle leaf both hash it
        self._check_link(entry, canonical)
        try:
            leaf = leaf_hash(audit_leaf(entry, canonical=canonical))
        except ValueError:
            # Unencodable seq or prev_hash: the chain check has already named this entry.
            leaf = leaf_hash(b"unencodable entry " + repr(entry).encode())
        self._builder.append_hash(leaf)
        self._check_pending()

    def _check_link(self, entry: AuditEntry, canonical: bytes | None) -> None:
        state = self._chain
        consistent = _written_as(entry, entry.seq, canonical)
        if entry.seq != state.expected_seq or entry.prev_hash != state.prev_hash or not consistent:
            self._record_break(entry, consistent)
        state.expected_seq = entry.seq + 1
        state.prev_hash = entry.entry_hash
        state.prev_seq = entry.seq
        state.recent[entry.entry_hash] = entry.seq
        if len(state.recent) > RECENT_WINDOW:
            state.recent.popitem(last=False)

    def _record_break(self, entry: AuditEntry, consistent: bool) -> None:
        bad, sentence = self._diagnose(entry, consistent)
        self._breaks.append(_Break(seq=bad, seen_at=entry.seq))
        if len(self._breaks) <= MAX_LISTED_BREAKS:
            self._problems.append(sentence)

    def _diagnose(self, entry: AuditEntry, consistent: bool) -> tuple[int, str]:
        """Which entry the break names, and a sentence saying what was seen."""
        state = self._chain
        seq, prev_seq = entry.seq, state.prev_seq
        origin = state.recent.get(entry.prev_hash)
        if origin is not None and origin < prev_seq and _written_as(entry, origin + 1):
            return origin + 1, (
                f"seq {origin + 1} to seq {prev_seq} were inserted: the entry now at seq {seq} "
                f"was written directly after seq {origin}"
            )
        if seq > state.expected_seq:
            missing = _span(state.expected_seq, seq - 1)
            jump = f"jumps from seq {prev_seq} to" if prev_seq else "starts at"
            return state.expected_seq, f"{missing} missing: the log {jump} seq {seq}"
        if seq < state.expected_seq:
            return seq, (
                f"seq {seq} appears again after seq {prev_seq}: entries were duplicated, "
                "inserted or reordered"
            )
        if entry.prev_hash != state.prev_hash:
            if consistent and prev_seq > 0:
                return prev_seq, (
                    f"seq {seq} does not link to seq {prev_seq}: seq {prev_seq} was changed and "
                    f"its hash recomputed (or seq {seq}'s link was rewritten)"
                )
            return seq, (
                f"seq {seq} does not link to seq {prev_seq}: its prev_hash is not the "
                f"{'genesis hash' if prev_seq == 0 else 'entry hash of seq ' + str(prev_seq)}"
            )
        return seq, (f"seq {seq} was changed: its contents no longer hash to its stored entry hash")

    def _check_pending(self) -> None:
        size = self._builder.size
        while self._pending and self._pending[0][1].tree_size <= size:
            number, checkpoint = self._pending.popleft()
            if self._builder.root().hex() == checkpoint.root_hash:
                if self._mismatch is None:
                    self._matched_size = max(self._matched_size, size)
                continue
            self._root_mismatch(number, checkpoint)

    def _root_mismatch(self, number: int, checkpoint: Checkpoint) -> None:
        if self._mismatch is not None:
            self._later_mismatches += 1
            return
        low, high = self._matched_size + 1, checkpoint.tree_size
        self._mismatch = _RootMismatch(low=low, high=high)
        vouched = (
            f"seq 1 to seq {self._matched_size} still match an earlier checkpoint"
            if self._matched_size
            else "no earlier checkpoint vouches for any entry"
        )
        self._problems.append(
            f"{describe_checkpoint(number, checkpoint)} no longer matches the log: an entry at "
            f"or before seq {high} (and at or after seq {low}) was changed since it was "
            f"signed; {vouched}"
        )

    def finish(self) -> LogVerdict:
        problems = list(self._problems)
        breaks = list(self._breaks)
        if len(breaks) > MAX_LISTED_BREAKS:
            problems.append(f"{len(breaks) - MAX_LISTED_BREAKS} more chain breaks not listed")
        if self._later_mismatches:
            problems.append(
                f"{self._later_mismatches} later checkpoint(s) do not match the log either"
            )
        if self._pending:
            number, checkpoint = self._pending[-1]
            where = (
                f"entries after seq {self._count} are missing "
                f"({_seqs(self._count + 1, checkpoint.tree_size)})"
                if self._last_seq == self._count
                else f"entries are missing (the last present is seq {self._last_seq})"
            )
            problems.append(
                f"{where}: {describe_checkpoint(number, checkpoint)} covers "
                f"{checkpoint.tree_size} entries but the log holds {self._count}"
            )
            breaks.append(_Break(seq=self._count + 1, seen_at=self._count + 1))
        first_bad, upper = self._first_bad(breaks)
        verified = (
            self._matched_size if first_bad is None else min(self._matched_size, first_bad - 1)
        )
        return LogVerdict(
            ok=not problems,
            first_bad_seq=first_bad,
            problems=problems,
            entries_checked=self._count,
            checkpoints_checked=self._checkpoints_checked,
            unprotected_tail=max(0, self._count - self._max_size),
            verified_through=verified,
            suspect_range=None if first_bad is None else (verified + 1, upper),
        )

    def _first_bad(self, breaks: list[_Break]) -> tuple[int | None, int]:
        """The first bad seq and the upper end of the range holding the first change."""
        mismatch = self._mismatch
        if breaks:
            first = min(b.seq for b in breaks)
            seen = max(first, breaks[0].seen_at)
            if mismatch is None or first <= mismatch.high:
                return first, seen
        if mismatch is not None:
            return mismatch.low, mismatch.high
        return None, 0


def _written_as(entry: AuditEntry, seq: int, canonical: bytes | None = None) -> bool:
    """True iff the entry's stored hash says it was written with this seq and its prev_hash."""
    if not is_hash_hex(entry.prev_hash):
        return False
    try:
        written = chain_hash(entry.prev_hash, seq, entry.event, canonical=canonical)
    except (ValueError, OverflowError):
        return False
    return written == entry.entry_hash


def _canonical(entry: AuditEntry) -> bytes | None:
    """The entry's canonical event bytes, or None where they cannot be encoded (the checks that
    use them then compute them again, and fail as they would have)."""
    try:
        return canonical_event_bytes(entry.event)
    except (ValueError, OverflowError):
        return None


def _seqs(low: int, high: int) -> str:
    return f"seq {low}" if low == high else f"seq {low} to seq {high}"


def _span(low: int, high: int) -> str:
    return f"{_seqs(low, high)} {'is' if low == high else 'are'}"
