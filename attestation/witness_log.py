"""A witness's own append-only store: one JSON object a line, written 0600 and fsynced.

The witness (`qtestbed audit witness`) appends a `checkpoint` record for each tree head it
cosigned and an `alarm` record for each fork or rollback it saw; `qtestbed audit verify
--witness FILE` reads the same file to verify the broker's store against it. Records:

    {"type": "checkpoint", "tree_size": int, "root_hash": hex, "at": float,
     "envelope": "<the broker's checkpoint DSSE JSON>", "cosignature": "<the witness's DSSE JSON>",
     "witnessed_at": float}
    {"type": "alarm", "kind": "fork" | "rollback" | ..., "tree_size": int, "message": str,
     "at": float, "evidence": "<the offending checkpoint DSSE JSON, if any>"}

The file is only ever appended to: a line is written whole with one write() and synced before
the witness acts on it, so a crash leaves at most a torn last line, which reading skips and
reports. Everything a checkpoint record says is re-checked against the broker's signature by
whoever reads it: the file is a copy, not an authority.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attestation.keys import VerifyKey
from attestation.tree_heads import TreeHead, TreeHeadError, open_checkpoint


class WitnessLogError(ValueError):
    """The witness file cannot be read as a witness file; names the line."""


@dataclass(frozen=True, kw_only=True, slots=True)
class WitnessedCheckpoint:
    head: TreeHead
    envelope: bytes
    cosignature: bytes
    witnessed_at: float


@dataclass(frozen=True, kw_only=True, slots=True)
class WitnessAlarm:
    kind: str
    tree_size: int
    message: str
    at: float


@dataclass(frozen=True, kw_only=True, slots=True)
class WitnessCopy:
    """What a witness file holds, every checkpoint re-verified with the log's key."""

    checkpoints: tuple[WitnessedCheckpoint, ...]
    alarms: tuple[WitnessAlarm, ...]
    torn_tail: bool = False
    problems: tuple[str, ...] = field(default=())

    @property
    def latest(self) -> WitnessedCheckpoint | None:
        return max(self.checkpoints, key=lambda c: c.head.tree_size, default=None)


def read_witness_log(path: Path, log_key: VerifyKey) -> WitnessCopy:
    """Parse `path`; a checkpoint record whose broker signature fails is a problem, not a head.

    Raises WitnessLogError when the file cannot be read or a line (other than a torn last one)
    is not a record.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise WitnessLogError(f"cannot read witness file {path}: {exc.strerror}") from exc
    lines = data.split(b"\n")
    torn = bool(lines and lines[-1].strip())  # no final newline: the last write was cut short
    complete = lines[:-1]
    checkpoints: list[WitnessedCheckpoint] = []
    alarms: list[WitnessAlarm] = []
    problems: list[str] = []
    for number, line in enumerate(complete, start=1):
        if not line.strip():
            continue
        record = _record(path, number, line)
        if record.get("type") == "alarm":
            alarms.append(_alarm(path, number, record))
            continue
        try:
            checkpoints.append(_checkpoint(record, log_key))
        except (TreeHeadError, KeyError, TypeError, ValueError) as exc:
            problems.append(f"{path} line {number}: {exc}")
    return WitnessCopy(
        checkpoints=tuple(checkpoints),
        alarms=tuple(alarms),
        torn_tail=torn,
        problems=tuple(problems),
    )


def append_record(path: Path, record: Mapping[str, Any]) -> None:
    """Append one record as one line, created 0600, synced before returning."""
    line = json.dumps(record, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    flags = os.O_RDWR | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags, 0o600)
    try:
        mode = os.fstat(fd).st_mode
        if mode & 0o077:
            raise WitnessLogError(
                f"witness file {path} is accessible by group or others (mode {mode & 0o777:#o}); "
                f"run `chmod 600 {path}`"
            )
        _cut_torn_line(fd)
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def _cut_torn_line(fd: int) -> None:
    """Drop a last line a crash cut short (nothing was acted on: records are synced first), so
    the next record starts a line of its own."""
    size = os.fstat(fd).st_size
    end = size
    while end > 0:
        start = max(0, end - 4096)
        chunk = os.pread(fd, end - start, start)
        cut = chunk.rfind(b"\n")
        if cut >= 0:
            end = start + cut + 1
            break
        end = start
    if end != size:
        os.ftruncate(fd, end)


def checkpoint_record(
    head: TreeHead, envelope: bytes, cosignature: bytes, witnessed_at: float
) -> dict[str, Any]:
    return {
        "type": "checkpoint",
        "tree_size": head.tree_size,
        "root_hash": head.root_hash,
        "at": head.at,
        "envelope": envelope.decode(),
        "cosignature": cosignature.decode(),
        "witnessed_at": witnessed_at,
    }


def alarm_record(
    kind: str, tree_size: int, message: str, at: float, evidence: bytes = b""
) -> dict[str, Any]:
    return {
        "type": "alarm",
        "kind": kind,
        "tree_size": tree_size,
        "message": message,
        "at": at,
        "evidence": evidence.decode(errors="replace"),
    }


def _record(path: Path, number: int, line: bytes) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise WitnessLogError(f"{path} line {number} is not a JSON record: {exc}") from exc
    if not isinstance(record, dict) or record.get("type") not in ("checkpoint", "alarm"):
        raise WitnessLogError(f"{path} line {number} is not a checkpoint or alarm record")
    return record


def _checkpoint(record: dict[str, Any], log_key: VerifyKey) -> WitnessedCheckpoint:
    envelope = str(record["envelope"]).encode()
    head = open_checkpoint(envelope, log_key)
    if (head.tree_size, head.root_hash) != (record["tree_size"], record["root_hash"]):
        raise ValueError("the record's tree size or root differs from its signed checkpoint")
    return WitnessedCheckpoint(
        head=head,
        envelope=envelope,
        cosignature=str(record["cosignature"]).encode(),
        witnessed_at=float(record["witnessed_at"]),
    )


def _alarm(path: Path, number: int, record: dict[str, Any]) -> WitnessAlarm:
    try:
        return WitnessAlarm(
            kind=str(record["kind"]),
            tree_size=int(record["tree_size"]),
            message=str(record["message"]),
            at=float(record["at"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise WitnessLogError(f"{path} line {number}: not an alarm record ({exc})") from exc
