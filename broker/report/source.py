"""Read what the report needs from a broker store (SQLite or PostgreSQL), without writing.

Only the store's public methods are used: `list_jobs` (newest first, paged by seq),
`access_records`, `list_devices`, `checkpoints` and `audit_entries`. The whole audit log is read
once, in seq order, and verified against the broker's signed checkpoints on the way, so every
figure taken from it stands on a checked log.

Who a job's owner was (affiliation, jurisdictions) and which tier its device had are taken as
they were when the job was submitted: the audit log records every principal document
(`access.principal.*`) and every device registration with its tier (`device.registered`). Only
when the log holds nothing from before the job are the current records used.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from attestation.keys import VerifyKey
from broker.access.documents import principal_from_doc
from broker.access.model import AccessError, RecordKind
from broker.audit.model import AuditEntry, AuditEvent
from broker.audit.stored import MalformedRow, iter_stored
from broker.audit.verify import verify_log
from broker.jobs.model import Job
from broker.report.model import Integrity
from broker.store import BrokerStore

T = TypeVar("T")

# list_jobs returns whole jobs, circuits included (up to 256 KiB each by default): keep pages small.
JOB_PAGE = 200
# Jobs are paged newest first by seq, the order they were committed in, while the period is in
# created_at, the broker clock when the submission arrived. The two orders differ by at most a
# submission's validation time (or clock differences between replicas), so paging stops once a
# job is older than the period's start by this margin.
ORDER_SLACK_SECONDS = 86_400.0

# Audit kinds counted when they fall in the period.
PERIOD_KINDS = frozenset(
    {
        "clearance.denied",
        "quota.exceeded",
        "attestation.failed",
        "attestation.passed",
        "anomaly.raised",
        "link.refused",  # Hellos for unregistered devices, in aggregate (reason unknown_device)
    }
)
# Device security state changes, read from the beginning of the log to rebuild quarantines.
STATUS_KINDS = frozenset({"device.quarantined", "device.released", "device.revoked"})
_PRINCIPAL_WRITES = frozenset(
    {"access.principal.seeded", "access.principal.created", "access.principal.updated"}
)


@dataclass(frozen=True, kw_only=True, slots=True)
class JobFact:
    """The columns of a job row the report uses (the circuit itself is dropped at once)."""

    job_id: str
    owner: str
    device_id: str
    project: str
    state: str
    shots: int
    created_at: float
    dispatched_at: float | None
    attempts: int


@dataclass(frozen=True, kw_only=True, slots=True)
class PrincipalFacts:
    affiliation: str
    jurisdictions: frozenset[str]


class History(Generic[T]):
    """Values per key over time; `at` answers with the value in force at a moment."""

    def __init__(self) -> None:
        self._times: dict[str, list[float]] = {}
        self._values: dict[str, list[T | None]] = {}

    def record(self, key: str, at: float, value: T | None) -> None:
        """`value` None: the key stopped existing (a principal removed)."""
        times = self._times.setdefault(key, [])
        values = self._values.setdefault(key, [])
        place = bisect.bisect_right(times, at)
        times.insert(place, at)
        values.insert(place, value)

    def at(self, key: str, when: float) -> tuple[bool, T | None]:
        """(whether anything was recorded for `key` by `when`, the value then)."""
        times = self._times.get(key)
        if not times:
            return False, None
        place = bisect.bisect_right(times, when)
        if place == 0:
            return False, None
        return True, self._values[key][place - 1]

    def keys(self) -> set[str]:
        return set(self._times)


@dataclass(kw_only=True, slots=True)
class Facts:
    """Everything read from the store, before any counting or suppression."""

    since: float
    until: float
    jobs: list[JobFact]
    principals_now: dict[str, PrincipalFacts]
    tiers_now: dict[str, str]
    principal_history: History[PrincipalFacts] = field(default_factory=History)
    tier_history: History[str] = field(default_factory=History)
    first_dispatch: dict[str, float] = field(default_factory=dict)
    period_events: list[AuditEvent] = field(default_factory=list)
    status_events: list[AuditEvent] = field(default_factory=list)
    unreadable_principal_docs: int = 0
    integrity: Integrity | None = None

    def registered_devices(self) -> set[str]:
        return set(self.tiers_now) | self.tier_history.keys()


def read_facts(store: BrokerStore, key: VerifyKey, since: float, until: float) -> Facts:
    """Jobs submitted in [since, until), current principals and devices, and the audit log."""
    facts = Facts(
        since=since,
        until=until,
        jobs=read_jobs(store, since, until),
        principals_now=_principals_now(store),
        tiers_now={d.device_id: d.tier for d in store.list_devices()},
    )
    # Checkpoints first: entries only grow, so a broker writing meanwhile cannot make a
    # checkpoint look ahead of the log that was read.
    checkpoints = store.checkpoints()
    wanted = {job.job_id for job in facts.jobs}
    verdict = verify_log(_feed(iter_stored(store), facts, wanted), checkpoints, key)
    facts.integrity = Integrity(
        ok=verdict.ok,
        entries_checked=verdict.entries_checked,
        checkpoints_checked=verdict.checkpoints_checked,
        verified_through=verdict.verified_through,
        unprotected_tail=verdict.unprotected_tail,
        problems=tuple(verdict.problems),
    )
    return facts


class JobSource(Protocol):
    def list_jobs(self, *, limit: int = ..., before_seq: int | None = ...) -> list[tuple[int, Job]]:
        """Jobs newest first as (seq, job), before `before_seq` if given."""


def read_jobs(
    store: JobSource, since: float, until: float, *, page: int = JOB_PAGE
) -> list[JobFact]:
    """Jobs created in [since, until), oldest first, paging back from the newest."""
    found: list[JobFact] = []
    before: int | None = None
    while True:
        batch = store.list_jobs(limit=page, before_seq=before)
        found.extend(_fact(job) for _seq, job in batch if since <= job.created_at < until)
        if len(batch) < page or batch[-1][1].created_at < since - ORDER_SLACK_SECONDS:
            break
        before = batch[-1][0]
    found.reverse()
    return found


def _fact(job: Job) -> JobFact:
    return JobFact(
        job_id=job.job_id,
        owner=job.owner,
        device_id=job.device_id,
        project=job.project,
        state=job.state.value,
        shots=job.shots,
        created_at=job.created_at,
        dispatched_at=job.dispatched_at,
        attempts=job.attempts,
    )


def _principals_now(store: BrokerStore) -> dict[str, PrincipalFacts]:
    found: dict[str, PrincipalFacts] = {}
    for record in store.access_records(RecordKind.PRINCIPAL):
        facts = principal_facts(record.name, record.doc)
        if facts is not None:
            found[record.name] = facts
    return found


def principal_facts(name: str, doc: Any) -> PrincipalFacts | None:
    """Affiliation and jurisdictions from a stored principal document; None if unreadable."""
    if not isinstance(doc, Mapping):
        return None
    try:
        principal = principal_from_doc(name, doc)
    except AccessError:
        return None
    return PrincipalFacts(affiliation=principal.affiliation, jurisdictions=principal.jurisdictions)


def _feed(
    entries: Iterator[AuditEntry | MalformedRow], facts: Facts, wanted: set[str]
) -> Iterator[AuditEntry | MalformedRow]:
    """Pass every entry on to the verifier, keeping what the report needs on the way (a
    malformed row is the verifier's to report, not the report's to read)."""
    for entry in entries:
        if isinstance(entry, AuditEntry):
            _keep(entry.event, facts, wanted)
        yield entry


def _keep(event: AuditEvent, facts: Facts, wanted: set[str]) -> None:
    kind, detail = event.kind, event.detail
    if kind == "job.dispatched":
        # Also after the period: a job submitted in it may have waited past its end.
        if event.subject in wanted and detail.get("attempt") == 1:
            facts.first_dispatch.setdefault(event.subject, event.at)
        return
    if event.at >= facts.until:
        return  # after the period: it cannot change anything the report says
    if kind in PERIOD_KINDS:
        if event.at >= facts.since:
            facts.period_events.append(event)
    elif kind in STATUS_KINDS:
        facts.status_events.append(event)
    elif kind in _PRINCIPAL_WRITES:
        found = principal_facts(event.subject, detail.get("record"))
        if found is None:
            facts.unreadable_principal_docs += 1
        else:
            facts.principal_history.record(event.subject, event.at, found)
    elif kind == "access.principal.removed":
        facts.principal_history.record(event.subject, event.at, None)
    elif kind == "device.registered":
        tier = detail.get("tier")
        if isinstance(tier, str) and tier:
            facts.tier_history.record(event.subject, event.at, tier)
