"""Verify a broker's whole audit store: the log, its checkpoints, a witness's copy, and any
further check, each producing named findings.

`verify_audit` streams the log once through `LogVerifier` (chain, Merkle roots against every
checkpoint: the store's, and a witness's copy when given), collecting the few facts the other
checks need, then runs `CHECKS` in order. A check is a `NamedCheck`: a name and a function
from `VerifyContext` to findings. To add one (a cross-check of jobs against their audit
entries, say), write it in its own module and pass `checks=(*CHECKS, NamedCheck(...))`, or
append it to `CHECKS`; it sees the open store, the log verdict and the checkpoints.

Without a witness copy the store's own checkpoints are all there is: deleting them, or rolling
the whole database back, leaves a log whose chain anyone can recompute. That is why zero
checkpoints, and a last checkpoint older than the signing interval while entries follow it,
are findings here: an honest broker signs every `checkpoint_every_seconds` while entries
arrive, and at shutdown.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from attestation.keys import VerifyKey
from attestation.witness_log import WitnessCopy
from broker.audit.crosscheck import crosscheck_store
from broker.audit.model import AuditEntry, Checkpoint
from broker.audit.stored import MalformedRow, RawAuditSource, iter_stored
from broker.audit.verify import LogVerdict, describe_checkpoint, verify_log

_LEADING_SEQ = re.compile(r"^seq (\d+) ")


@dataclass(frozen=True, kw_only=True, slots=True)
class Finding:
    """One thing found wrong: which check, what kind, the first bad entry (or job) it names."""

    check: str
    kind: str
    message: str
    seq: int | None = None
    job_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "kind": self.kind,
            "seq": self.seq,
            "job_id": self.job_id,
            "message": self.message,
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class LogFacts:
    """What the one pass over the log saw, beyond the verdict: counts and the tail's times."""

    entries: int
    last_seq: int
    # Entries after the newest checkpoint: (seq, at) of each, at most `_TAIL_KEPT` of them
    # from the start plus the very last one.
    tail: tuple[tuple[int, float], ...]


@dataclass(frozen=True, kw_only=True, slots=True)
class VerifyContext:
    store: Any  # the open store: checks read what they need from it
    key: VerifyKey
    log: LogVerdict
    facts: LogFacts
    stored_checkpoints: tuple[Checkpoint, ...]
    checkpoints: tuple[Checkpoint, ...]  # stored and witnessed, merged, smallest first
    witness: WitnessCopy | None
    checkpoint_every_seconds: float


Check = Callable[[VerifyContext], Iterable[Finding]]


@dataclass(frozen=True, kw_only=True, slots=True)
class NamedCheck:
    name: str
    run: Check


@dataclass(frozen=True, kw_only=True, slots=True)
class AuditVerdict:
    """The verdict `qtestbed audit verify` prints: ok only when no check found anything."""

    entries: int
    checkpoints: int
    findings: tuple[Finding, ...]
    log: LogVerdict
    witnessed: int = 0
    notes: tuple[str, ...] = field(default=())

    @classmethod
    def of_log(cls, log: LogVerdict) -> AuditVerdict:
        """The verdict of the log check alone (no other checks ran)."""
        return cls(
            entries=log.entries_checked,
            checkpoints=log.checkpoints_checked,
            findings=tuple(log_findings(log)),
            log=log,
        )

    @property
    def ok(self) -> bool:
        return not self.findings

    @property
    def first_bad(self) -> int | None:
        """The first bad entry of the log; a job finding's seq counts only when the log itself
        has none (a job that disagrees with an entry the log lost names the entry before)."""
        of_log = [f.seq for f in self.findings if f.seq is not None and f.job_id is None]
        of_jobs = [f.seq for f in self.findings if f.seq is not None and f.job_id is not None]
        return min(of_log or of_jobs, default=None)

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.log.to_dict(),
            "ok": self.ok,
            "entries": self.entries,
            "checkpoints": self.checkpoints,
            "witnessed_checkpoints": self.witnessed,
            "first_bad": self.first_bad,
            "findings": [f.to_dict() for f in self.findings],
            "notes": list(self.notes),
        }


def verify_audit(
    store: RawAuditSource,
    key: VerifyKey,
    *,
    stored_checkpoints: Sequence[Checkpoint],
    checkpoint_every_seconds: float,
    witness: WitnessCopy | None = None,
    checks: Sequence[NamedCheck] | None = None,
) -> AuditVerdict:
    """Run the log pass, then every check; findings in check order."""
    merged = merge_checkpoints(stored_checkpoints, witness, key.key_id)
    newest = merged[-1].tree_size if merged else 0
    tail = _TailRecorder(newest)
    log = verify_log(tail.watch(iter_stored(store)), merged, key)
    context = VerifyContext(
        store=store,
        key=key,
        log=log,
        facts=LogFacts(entries=log.entries_checked, last_seq=tail.last_seq, tail=tail.kept()),
        stored_checkpoints=tuple(stored_checkpoints),
        checkpoints=tuple(merged),
        witness=witness,
        checkpoint_every_seconds=checkpoint_every_seconds,
    )
    findings: list[Finding] = []
    for check in CHECKS if checks is None else checks:
        findings.extend(check.run(context))
    notes = []
    if log.unprotected_tail:
        notes.append(
            f"{log.unprotected_tail} entries after the last checkpoint are protected by the "
            "hash chain only"
        )
    return AuditVerdict(
        entries=log.entries_checked,
        checkpoints=len(merged),
        findings=tuple(findings),
        log=log,
        witnessed=len(witness.checkpoints) if witness else 0,
        notes=tuple(notes),
    )


def merge_checkpoints(
    stored: Sequence[Checkpoint], witness: WitnessCopy | None, key_id: str
) -> list[Checkpoint]:
    """The store's checkpoints plus the witness's copies, smallest first. Where the two
    disagree on one tree size (a fork, which the `witness` check reports) only the witness's
    copies are kept; a checkpoint only the witness kept is one a database attacker deleted."""
    by_size: dict[int, Checkpoint] = {}
    witnessed_roots = (
        {w.head.tree_size: w.head.root_hash for w in witness.checkpoints} if witness else {}
    )
    forked = any(witnessed_roots.get(c.tree_size, c.root_hash) != c.root_hash for c in stored)
    # A fork means the broker's key signed two histories: none of the store's checkpoints can
    # then vouch for anything, and only the witness's copies bound where the change lies.
    for checkpoint in () if forked else stored:
        by_size.setdefault(checkpoint.tree_size, checkpoint)
    for witnessed in witness.checkpoints if witness else ():
        head = witnessed.head
        by_size[head.tree_size] = Checkpoint(
            tree_size=head.tree_size,
            root_hash=head.root_hash,
            at=head.at,
            key_id=key_id,
            envelope=witnessed.envelope,
        )
    return [by_size[size] for size in sorted(by_size)]


_TAIL_KEPT = 64


class _TailRecorder:
    """Remembers (seq, at) of the entries after the newest checkpoint, in bounded memory."""

    def __init__(self, newest: int) -> None:
        self._newest = newest
        self._kept: list[tuple[int, float]] = []
        self._last: tuple[int, float] | None = None
        self.last_seq = 0

    def watch(
        self, rows: Iterator[AuditEntry | MalformedRow]
    ) -> Iterator[AuditEntry | MalformedRow]:
        for row in rows:
            self.last_seq = row.seq
            if isinstance(row, AuditEntry) and row.seq > self._newest:
                mark = (row.seq, row.event.at)
                if len(self._kept) < _TAIL_KEPT:
                    self._kept.append(mark)
                self._last = mark
            yield row

    def kept(self) -> tuple[tuple[int, float], ...]:
        if self._last is not None and self._last not in self._kept:
            return (*self._kept, self._last)
        return tuple(self._kept)


def check_log(ctx: VerifyContext) -> Iterator[Finding]:
    """The chain and every checkpoint root (`LogVerifier`), one finding per problem."""
    return log_findings(ctx.log)


def log_findings(log: LogVerdict) -> Iterator[Finding]:
    for index, problem in enumerate(log.problems):
        named = _LEADING_SEQ.match(problem)
        malformed = " is malformed: " in problem
        seq = int(named.group(1)) if named and malformed else None
        if index == 0 and seq is None:
            seq = log.first_bad_seq
        kind = "malformed" if malformed else "chain"
        if problem.startswith("checkpoint #") and " is not valid: " in problem:
            kind = "checkpoint_invalid"
        yield Finding(check="log", kind=kind, message=problem, seq=seq)


def check_checkpoints_present(ctx: VerifyContext) -> Iterator[Finding]:
    """An honest broker has signed a checkpoint once it has entries (and always at shutdown)."""
    if ctx.facts.entries and not ctx.checkpoints:
        yield Finding(
            check="checkpoints",
            kind="no_checkpoints",
            message=(
                f"{ctx.facts.entries} entries but no checkpoint: the broker signs one every "
                f"{ctx.checkpoint_every_seconds:g} s while entries arrive and at shutdown, so "
                "they were deleted (or the log was rewritten); nothing in this store vouches "
                "for any entry. Verify with a witness copy (--witness) to name the change"
            ),
        )


def check_checkpoint_fresh(ctx: VerifyContext) -> Iterator[Finding]:
    """Entries written well after a checkpoint was due, with no checkpoint covering them."""
    tail = ctx.facts.tail
    if not ctx.checkpoints or not tail:
        return
    newest = ctx.checkpoints[-1]
    interval = ctx.checkpoint_every_seconds
    # Due at the first tick after both the interval since the last one and the first new
    # entry; one more interval of grace for slow ticks.
    deadline = max(newest.at + interval, tail[0][1]) + interval
    late = next(((seq, at) for seq, at in tail if at > deadline), None)
    if late is None:
        return
    yield Finding(
        check="checkpoints",
        kind="stale_checkpoint",
        seq=tail[0][0],
        message=(
            f"seq {tail[0][0]} onwards are covered by no checkpoint, yet seq {late[0]} was "
            f"written {late[1] - newest.at:.0f} s after "
            f"{describe_checkpoint(len(ctx.checkpoints), newest)} (the broker signs every "
            f"{interval:g} s): later checkpoints were deleted"
        ),
    )


def check_witness(ctx: VerifyContext) -> Iterator[Finding]:
    """Against the witness's copy: forks, deleted checkpoints, rollbacks, its own alarms."""
    copy = ctx.witness
    if copy is None:
        return
    stored = {c.tree_size: c for c in ctx.stored_checkpoints}
    for witnessed in copy.checkpoints:
        head = witnessed.head
        mine = stored.get(head.tree_size)
        if mine is not None and mine.root_hash == head.root_hash:
            if mine.envelope != witnessed.envelope:
                yield Finding(
                    check="witness",
                    kind="checkpoint_altered",
                    message=(
                        f"the store's checkpoint of tree size {head.tree_size} is not the one "
                        "the witness cosigned (same root, different signed envelope): it was "
                        "edited or replaced"
                    ),
                )
        elif mine is not None:
            yield Finding(
                check="witness",
                kind="fork",
                message=(
                    f"the store's checkpoint of tree size {head.tree_size} has root "
                    f"{mine.root_hash[:16]}..., the witness cosigned {head.root_hash[:16]}...: "
                    "two signed heads of one size (a fork, or a checkpoint rewritten)"
                ),
            )
        elif mine is None:
            yield Finding(
                check="witness",
                kind="checkpoint_deleted",
                message=(
                    f"the witness cosigned a checkpoint of tree size {head.tree_size} that the "
                    "store no longer holds: checkpoints were deleted"
                ),
            )
    latest = copy.latest
    if latest is not None and ctx.facts.entries < latest.head.tree_size:
        yield Finding(
            check="witness",
            kind="rollback",
            seq=ctx.facts.entries + 1,
            message=(
                f"the log holds {ctx.facts.entries} entries but the witness cosigned a tree of "
                f"{latest.head.tree_size}: the store was rolled back or truncated"
            ),
        )
    for alarm in copy.alarms:
        yield Finding(
            check="witness",
            kind=f"witness_alarm_{alarm.kind}",
            message=f"the witness raised a {alarm.kind} alarm: {alarm.message}",
        )


def check_jobs(context: VerifyContext) -> Iterator[Finding]:
    """Jobs and results rows against the entries that recorded them (names job and seq)."""
    for found in crosscheck_store(context.store):
        yield Finding(
            check="jobs",
            kind="job_mismatch",
            message=found.sentence(),
            seq=found.seq,
            job_id=found.job_id,
        )


CHECKS: list[NamedCheck] = [
    NamedCheck(name="log", run=check_log),
    NamedCheck(name="checkpoints_present", run=check_checkpoints_present),
    NamedCheck(name="checkpoint_fresh", run=check_checkpoint_fresh),
    NamedCheck(name="witness", run=check_witness),
    NamedCheck(name="jobs", run=check_jobs),
]
