"""Audit rows exactly as a store holds them, read without trusting them.

The broker's own reads decode rows it wrote itself. A verifier, and the broker at start, must
read a store someone may have edited: a detail that is not JSON, text that is not UTF-8, a
missing or mistyped column. `entry_from_stored` turns one raw row into an `AuditEntry` or raises
`MalformedEntry` naming the seq and the column, so the damage is reported as a bad entry and
never as a traceback.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from attestation._json import StrictJSONError, strict_loads
from broker.audit.model import AuditEntry, AuditEvent

# Raw rows are (seq, kind, actor, subject, at, detail, prev_hash, entry_hash); text columns may
# come as bytes (SQLite hands them over undecoded, so invalid UTF-8 is seen, not raised).
RawAuditRow = Sequence[object]
_TEXT_COLUMNS = ("kind", "actor", "subject", "detail", "prev_hash", "entry_hash")


class MalformedEntry(Exception):
    """A stored audit row that is not an entry at all; `seq` as stored, `problem` says why."""

    def __init__(self, seq: int, problem: str) -> None:
        super().__init__(f"seq {seq} is malformed: {problem}")
        self.seq = seq
        self.problem = problem


@dataclass(frozen=True, kw_only=True, slots=True)
class MalformedRow:
    """What an iteration yields in place of an entry it cannot decode."""

    seq: int
    problem: str
    # The stored entry_hash when it decoded, so the next entry's link can still be checked.
    entry_hash: str | None


class RawAuditSource(Protocol):
    def audit_rows(self, *, after_seq: int = 0, limit: int = 1000) -> list[tuple[Any, ...]]: ...


def entry_from_stored(row: RawAuditRow) -> AuditEntry:
    """Decode one raw row; MalformedEntry names what is wrong with it."""
    if len(row) != 8:
        raise MalformedEntry(_seq_of(row), f"has {len(row)} columns, not 8")
    seq = _seq_of(row)
    texts = {
        name: _text(seq, name, row[i])
        for i, name in zip((1, 2, 3, 5, 6, 7), _TEXT_COLUMNS, strict=True)
    }
    at = row[4]
    if isinstance(at, bool) or not isinstance(at, int | float) or not math.isfinite(at):
        raise MalformedEntry(seq, f"its time (at) is {at!r}, not a finite number")
    try:
        detail = strict_loads(texts["detail"].encode())
    except StrictJSONError as exc:
        raise MalformedEntry(seq, f"its detail is not JSON ({exc})") from exc
    if not isinstance(detail, dict):
        raise MalformedEntry(seq, "its detail is not a JSON object")
    event = AuditEvent(
        kind=texts["kind"],
        actor=texts["actor"],
        subject=texts["subject"],
        at=float(at),
        detail=detail,
    )
    return AuditEntry(
        seq=seq, event=event, prev_hash=texts["prev_hash"], entry_hash=texts["entry_hash"]
    )


def iter_stored(
    store: RawAuditSource, *, after_seq: int = 0, page: int = 1000
) -> Iterator[AuditEntry | MalformedRow]:
    """Every row after `after_seq` in seq order, decoded where it can be (constant memory)."""
    while True:
        batch = store.audit_rows(after_seq=after_seq, limit=page)
        for row in batch:
            try:
                yield entry_from_stored(row)
            except MalformedEntry as exc:
                yield MalformedRow(seq=exc.seq, problem=exc.problem, entry_hash=_hash_of(row))
        if len(batch) < page:
            return
        after_seq = _seq_of(batch[-1])


def _seq_of(row: RawAuditRow) -> int:
    seq = row[0] if row else None
    if isinstance(seq, bool) or not isinstance(seq, int):
        # seq is the primary key (an integer column in every store); kept as a last defence.
        raise MalformedEntry(-1, f"its seq is {seq!r}, not an integer")
    return seq


def _text(seq: int, name: str, value: object) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedEntry(
                seq,
                f"its {name} is not valid UTF-8 (byte {exc.start} is {exc.object[exc.start]:#04x})",
            ) from exc
    if isinstance(value, str):
        return value
    raise MalformedEntry(seq, f"its {name} is {type(value).__name__}, not text")


def _hash_of(row: RawAuditRow) -> str | None:
    try:
        return _text(0, "entry_hash", row[7])
    except (MalformedEntry, IndexError):
        return None
