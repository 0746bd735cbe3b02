"""Cross-check the jobs and results tables against the audit log.

The audit log is hash-chained and checkpointed; the jobs and results tables beside it are not.
A database administrator who edits a job's owner, device, shots or circuit, turns a
COMPLETED job into FAILED, edits a result's counts, deletes a result or a job row, or inserts a
job row is only seen if someone compares those rows with what the log says happened. This
module does that, reading the store directly (SQLite or PostgreSQL, through the same store
port the broker uses), and names the job and the audit entry (seq) of every mismatch.

What each job row is compared with:

* its `job.submitted` entry: owner (the entry's actor), device, shots, circuit digest, project;
  and the stored circuit payload must hash to that digest;
* its last state-changing entry (job.submitted/requeued -> QUEUED, job.dispatched, job.running,
  job.completed, job.failed, job.cancelled, clearance.denied at dispatch -> DENIED): the row's
  state must be that state, and each entry's move must be legal for the job state machine;
* for a COMPLETED job, its `job.completed` entry and its results row: the row must exist and
  name the same device; its counts must hash to the entry's `result_digest` and its receipt to
  `receipt_digest`. Entries written before those two fields existed (they carry only device and
  shots) are checked against the device-signed receipt instead: the counts must hash to the
  receipt's signed `result_digest` and the receipt must name the job. Either way a results row
  of a job that is not COMPLETED is a finding, and stored per-shot memory must hash to the
  `memory_digest` the receipt binds (and be there exactly when the receipt binds one).

Every `job.*` entry must name a job row (a deleted row is a finding), every job row must have a
`job.submitted` entry (a row inserted without one is a finding).

On a live store, the broker may write between the reading of the log and of the tables: a job
that disagrees is read again, with the entries written meanwhile, before it is reported.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from attestation.dsse import Envelope, EnvelopeError
from attestation.receipts import ReceiptError, decode_receipt, result_digest
from attestation.shot_memory import ShotMemory, ShotMemoryError
from broker.audit.model import AuditEntry
from broker.audit.stored import iter_stored
from broker.audit.verify import iter_entries
from broker.jobs.model import ALLOWED_TRANSITIONS, Job, JobResult, JobState
from broker.jobs.result_digests import RECEIPT_DIGEST, RESULT_DIGEST, receipt_digest

# The job state each job audit entry records the job entering.
STATE_OF_KIND: Mapping[str, JobState] = {
    "job.submitted": JobState.QUEUED,
    "job.requeued": JobState.QUEUED,
    "job.dispatched": JobState.DISPATCHED,
    "job.running": JobState.RUNNING,
    "job.completed": JobState.COMPLETED,
    "job.failed": JobState.FAILED,
    "job.cancelled": JobState.CANCELLED,
    "clearance.denied": JobState.DENIED,  # only with a job as subject (denied at dispatch)
}
_PAGE = 500
# What decoding a hand-edited jobs or results row can raise (an unknown state, a wrong type).
_ROW_ERRORS = (ValueError, TypeError, KeyError, AttributeError)


class JobStore(Protocol):
    """What the cross-check reads: the audit log, the jobs and the results."""

    def audit_entries(self, *, after_seq: int = 0, limit: int = 1000) -> list[AuditEntry]: ...

    def audit_rows(self, *, after_seq: int = 0, limit: int = 1000) -> list[tuple[Any, ...]]: ...

    def list_jobs(
        self, *, limit: int = 100, before_seq: int | None = None
    ) -> list[tuple[int, Job]]: ...

    def get_job(self, job_id: str, *, owner: str | None = None) -> Job | None: ...

    def get_result(self, job_id: str) -> JobResult | None: ...


@dataclass(frozen=True, kw_only=True, slots=True)
class JobFinding:
    """A job row or result that disagrees with the audit log; `seq` is the entry it disagrees
    with (None when there is no entry at all)."""

    job_id: str
    seq: int | None
    problem: str

    def sentence(self) -> str:
        entry = f"audit seq {self.seq}" if self.seq is not None else "no audit entry"
        return f"job {self.job_id} ({entry}): {self.problem}"


@dataclass(slots=True)
class _Audited:
    """One job as the audit log tells it."""

    submitted_seq: int | None = None
    submitted: Mapping[str, Any] = field(default_factory=dict)
    owner: str = ""
    state: JobState | None = None
    state_seq: int = 0
    state_kind: str = ""
    completed_seq: int | None = None
    completed: Mapping[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class _Fold:
    """The audit log folded into one `_Audited` per job, plus what was wrong in the log."""

    jobs: dict[str, _Audited] = field(default_factory=dict)
    findings: list[JobFinding] = field(default_factory=list)
    last_seq: int = 0

    def add(self, entry: AuditEntry) -> None:
        self.last_seq = entry.seq
        event = entry.event
        target = STATE_OF_KIND.get(event.kind)
        if target is None or not isinstance(event.subject, str) or not event.subject:
            return
        job_id = event.subject
        audited = self.jobs.get(job_id)
        if event.kind == "clearance.denied" and audited is None:
            return  # a denial at submit names no job; only dispatch denials move one
        if audited is None:
            audited = self.jobs[job_id] = _Audited()
        detail = event.detail if isinstance(event.detail, Mapping) else {}
        if event.kind == "job.submitted":
            self._submitted(job_id, audited, entry, detail)
            return
        if audited.state is None:
            self._flag(job_id, entry.seq, f"{event.kind} entry for a job never submitted")
        elif target not in ALLOWED_TRANSITIONS[audited.state]:
            self._flag(
                job_id,
                entry.seq,
                f"{event.kind} moves the job {audited.state.value} -> {target.value}, which "
                f"the job state machine forbids (previous: seq {audited.state_seq})",
            )
        if event.kind == "job.completed":
            audited.completed_seq, audited.completed = entry.seq, detail
        audited.state, audited.state_seq, audited.state_kind = target, entry.seq, event.kind

    def _submitted(
        self, job_id: str, audited: _Audited, entry: AuditEntry, detail: Mapping[str, Any]
    ) -> None:
        if audited.submitted_seq is not None:
            self._flag(job_id, entry.seq, f"submitted again (first at seq {audited.submitted_seq})")
            return
        audited.submitted_seq, audited.submitted = entry.seq, detail
        audited.owner = entry.event.actor
        audited.state, audited.state_seq, audited.state_kind = (
            JobState.QUEUED,
            entry.seq,
            "job.submitted",
        )

    def _flag(self, job_id: str, seq: int, problem: str) -> None:
        self.findings.append(JobFinding(job_id=job_id, seq=seq, problem=problem))


def crosscheck_store(store: JobStore) -> list[JobFinding]:
    """Every disagreement between the jobs/results tables and the audit log of `store`."""
    fold = _Fold()
    for item in iter_stored(store):
        if isinstance(item, AuditEntry):  # a malformed row is the log check's finding
            fold.add(item)
    suspects: set[str] = set()
    seen: set[str] = set()
    unreadable: list[JobFinding] = []
    try:
        for job in _all_jobs(store):
            seen.add(job.job_id)
            if _compare(job, fold.jobs.get(job.job_id), store):
                suspects.add(job.job_id)
    except _ROW_ERRORS as exc:
        # A row the store cannot decode (a state or format that does not exist, a wrong type):
        # listing stops there, so every job the log knows is read on its own below.
        unreadable.append(
            JobFinding(
                job_id="(unknown)",
                seq=None,
                problem=f"the jobs table holds a row that cannot be read ({exc}); jobs the "
                "audit log does not know could not all be listed past it",
            )
        )
    suspects |= fold.jobs.keys() - seen
    if not suspects:
        return fold.findings + unreadable
    # The broker may have written since the log was read: catch up, then read each suspect again.
    for entry in iter_entries(store, after_seq=fold.last_seq):
        fold.add(entry)
    findings = [*fold.findings, *unreadable]
    for job_id in sorted(suspects):
        findings.extend(_recheck(store, job_id, fold.jobs.get(job_id)))
    return findings


def _recheck(store: JobStore, job_id: str, audited: _Audited | None) -> list[JobFinding]:
    try:
        current = store.get_job(job_id)
        if current is not None:
            return _compare(current, audited, store)
    except _ROW_ERRORS as exc:
        seq = audited.submitted_seq if audited is not None else None
        return [JobFinding(job_id=job_id, seq=seq, problem=f"the job row cannot be read ({exc})")]
    if audited is None or audited.submitted_seq is None:
        return []
    return [
        JobFinding(
            job_id=job_id,
            seq=audited.state_seq,
            problem=f"the job row is gone, though the log records it "
            f"(submitted at seq {audited.submitted_seq}, last {audited.state_kind})",
        )
    ]


def _all_jobs(store: JobStore) -> Iterator[Job]:
    before: int | None = None
    while True:
        page = store.list_jobs(limit=_PAGE, before_seq=before)
        yield from (job for _, job in page)
        if len(page) < _PAGE:
            return
        before = page[-1][0]


def _compare(job: Job, audited: _Audited | None, store: JobStore) -> list[JobFinding]:
    if audited is None or audited.submitted_seq is None:
        return [
            JobFinding(
                job_id=job.job_id,
                seq=None,
                problem=f"the jobs table holds this {job.state.value} job of {job.owner!r} but "
                "the audit log never recorded its submission (row inserted without an entry)",
            )
        ]
    found = _submission_mismatches(job, audited, audited.submitted_seq)
    found.extend(_state_mismatches(job, audited))
    try:
        result = store.get_result(job.job_id)
    except _ROW_ERRORS as exc:
        seq = audited.completed_seq or audited.state_seq
        problem = f"the results row cannot be read ({exc})"
        return [*found, JobFinding(job_id=job.job_id, seq=seq, problem=problem)]
    found.extend(_result_mismatches(job, audited, result))
    return found


def _submission_mismatches(job: Job, audited: _Audited, seq: int) -> list[JobFinding]:
    detail = audited.submitted
    pairs: Iterable[tuple[str, object, object]] = (
        ("owner", job.owner, audited.owner),
        ("device", job.device_id, detail.get("device")),
        ("shots", job.shots, detail.get("shots")),
        ("circuit digest", job.circuit.digest, detail.get("circuit_digest")),
        ("project", job.project, detail.get("project", job.project)),
    )
    found = [
        JobFinding(
            job_id=job.job_id,
            seq=seq,
            problem=f"{name} is {row!r} in the jobs table but {logged!r} in its job.submitted "
            "entry",
        )
        for name, row, logged in pairs
        if row != logged
    ]
    if hashlib.sha256(job.circuit.payload).hexdigest() != job.circuit.digest:
        found.append(
            JobFinding(
                job_id=job.job_id,
                seq=seq,
                problem="the stored circuit payload does not hash to the job's circuit digest",
            )
        )
    return found


def _state_mismatches(job: Job, audited: _Audited) -> list[JobFinding]:
    if audited.state is None or job.state is audited.state:
        return []
    return [
        JobFinding(
            job_id=job.job_id,
            seq=audited.state_seq,
            problem=f"state is {job.state.value} in the jobs table but its last audit entry "
            f"({audited.state_kind}) records {audited.state.value}",
        )
    ]


def _result_mismatches(job: Job, audited: _Audited, result: JobResult | None) -> list[JobFinding]:
    seq = audited.completed_seq
    if audited.state is not JobState.COMPLETED or seq is None:
        if result is None:
            return []
        return [
            JobFinding(
                job_id=job.job_id,
                seq=audited.state_seq,
                problem=f"a results row exists but the job's last audit entry "
                f"({audited.state_kind}) leaves it {_state_name(audited.state)}",
            )
        ]

    def finding(problem: str) -> JobFinding:
        return JobFinding(job_id=job.job_id, seq=seq, problem=problem)

    if result is None:
        return [finding("the job.completed entry records a result but the results row is gone")]
    found: list[JobFinding] = []
    logged_device = audited.completed.get("device")
    if logged_device is not None and result.device_id != logged_device:
        found.append(
            finding(f"result device is {result.device_id!r}, job.completed says {logged_device!r}")
        )
    found.extend(finding(p) for p in _memory_mismatches(result))
    counts_digest = _counts_digest(result)
    if RESULT_DIGEST in audited.completed:
        if counts_digest != audited.completed[RESULT_DIGEST]:
            found.append(finding("the stored counts do not match the job.completed result digest"))
        if receipt_digest(result.receipt) != audited.completed.get(RECEIPT_DIGEST):
            found.append(finding("the stored receipt is not the one job.completed recorded"))
        return found
    # An entry from before result digests were logged: the device's signature is the witness.
    found.extend(finding(p) for p in _receipt_mismatches(job, result, counts_digest))
    return found


def _state_name(state: JobState | None) -> str:
    return state.value if state is not None else "never submitted"


def _counts_digest(result: JobResult) -> str | None:
    try:
        return result_digest(result.counts)
    except ValueError:
        return None


def _memory_mismatches(result: JobResult) -> list[str]:
    """Stored per-shot memory against the digest the device signed (the receipt itself is
    pinned by job.completed, or checked against the device's signature for older entries)."""
    try:
        signed = decode_receipt(Envelope.from_json(result.receipt)).memory_digest
    except (EnvelopeError, ReceiptError):
        return []  # an unreadable receipt is named by the receipt checks
    if not result.memory_width and not result.memory:
        return (
            ["the stored result has no per-shot memory; its receipt binds some"] if signed else []
        )
    try:
        stored = ShotMemory(result.memory_width, result.memory).digest()
    except ShotMemoryError as exc:
        return [f"the stored per-shot memory is malformed: {exc}"]
    if stored != signed:
        return ["the stored per-shot memory does not match the digest the device signed"]
    return []


def _receipt_mismatches(job: Job, result: JobResult, counts_digest: str | None) -> list[str]:
    try:
        claims = decode_receipt(Envelope.from_json(result.receipt))
    except (EnvelopeError, ReceiptError) as exc:
        return [f"the stored receipt cannot be read ({exc}); job.completed predates result digests"]
    problems = []
    if claims.job_id != job.job_id:
        problems.append(f"the stored receipt is for job {claims.job_id}")
    if counts_digest != claims.result_digest:
        problems.append(
            "the stored counts do not match the digest the device signed in the receipt "
            "(job.completed predates result digests in the log)"
        )
    return problems
