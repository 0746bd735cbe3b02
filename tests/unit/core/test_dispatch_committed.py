"""Dispatch decides on committed state (broker/link/dispatcher.py): a change committed while a
job's lease is being written (by another writer, bypassing this broker's in-memory snapshot)
is seen by the checks that run after the write, so the job never leaves.

The change is injected at the store seam: the lease write itself commits it, through a second
connection to the same database (a replica's), so it is committed by the time the dispatcher
looks again, and no sleeping or timing decides whether the race is hit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from broker.access.documents import principal_from_doc, principal_to_doc
from broker.access.model import AccessRecord, RecordKind
from broker.audit.model import AuditEvent
from broker.jobs.model import Job, JobResult, JobState
from broker.link import messages as m
from broker.store.memory import MemoryStore
from tests.unit.core.harness import (
    Core,
    attested,
    connection,
    events,
    job_of,
    metric,
    only,
    queued,
    request,
)

_SaveJob = Callable[..., bool]


def during_lease_write(
    core: Core, monkeypatch: pytest.MonkeyPatch, change: Callable[[], object]
) -> None:
    """Run `change` inside the store's transaction of the next lease write (a job saved as
    DISPATCHED), after the write itself: it commits together with the lease."""
    original: _SaveJob = core.store.save_job
    fired: list[str] = []

    def save_job(
        job: Job,
        *,
        expected_version: int,
        event: AuditEvent | None = None,
        result: JobResult | None = None,
    ) -> bool:
        saved = original(job, expected_version=expected_version, event=event, result=result)
        if saved and job.state is JobState.DISPATCHED and not fired:
            fired.append(job.job_id)
            change()
        return saved

    monkeypatch.setattr(core.store, "save_job", save_job)


def replica_amends(core: Core, name: str, **changes: object) -> Callable[[], None]:
    """Another replica's operator write of principal `name`: a compare-and-set on the stored
    record through its own connection, with its audit event, that this broker's access
    snapshot knows nothing of."""
    replica = MemoryStore(core.store.database)

    def amend() -> None:
        stored = replica.access_record(RecordKind.PRINCIPAL, name)
        assert stored is not None, name
        changed = dataclasses.replace(principal_from_doc(name, stored.doc), **changes)  # type: ignore[arg-type]
        doc = principal_to_doc(changed)
        record = AccessRecord(
            kind=RecordKind.PRINCIPAL,
            name=name,
            doc=doc,
            version=stored.version + 1,
            updated_at=core.clock.now(),
            updated_by="olivia",
        )
        event = AuditEvent(
            kind="access.principal.updated",
            actor="olivia",
            subject=name,
            at=core.clock.now(),
            detail={"record": doc, "version": record.version},
        )
        assert replica.put_access(record, expected_version=stored.version, event=event)

    return amend


async def test_a_clearance_expired_during_the_lease_write_stops_the_job(
    core: Core, monkeypatch: pytest.MonkeyPatch
) -> None:
    driver = await attested(core)
    job_id = await queued(core)
    amend = replica_amends(core, "alice", clearance_expires_at=core.clock.now() - 1)
    during_lease_write(core, monkeypatch, amend)
    await core.pump()
    job = await job_of(core, job_id)
    rule = "researcher-dispatch/clearance"
    assert (job.state, job.rule_id, job.lease) == (JobState.DENIED, rule, None)
    assert "clearance expired" in job.reason
    assert only(driver.heard(), m.LeaseGrant) == []
    # The lease was written (and audited), then withdrawn before it was sent.
    [dispatched] = events(core, "job.dispatched")
    [denied] = events(core, "clearance.denied")
    assert denied.subject == job_id
    assert (denied.detail["stage"], denied.detail["rule"]) == ("dispatch", rule)
    assert denied.detail["lease"] == dispatched.detail["lease"]
    assert metric(core, "qtestbed_clearance_denials_total", rule=rule, stage="dispatch") == 1
    # The connection is free again: bob's job goes out to it.
    assert not connection(driver).leases
    bobs = await queued(core, "bob")
    await core.pump()
    assert [g.job_id for g in driver.grants()] == [bobs]


async def test_a_tier_lowered_during_the_lease_write_stops_the_job(
    core: Core, monkeypatch: pytest.MonkeyPatch
) -> None:
    driver = await attested(core, "dev-restricted", tier="restricted")
    job_id = await queued(core, "bob", request("dev-restricted"))
    during_lease_write(core, monkeypatch, replica_amends(core, "bob", tier="controlled"))
    await core.pump()
    job = await job_of(core, job_id)
    rule = "researcher-dispatch/tier"
    assert (job.state, job.rule_id) == (JobState.DENIED, rule)
    assert only(driver.heard(), m.LeaseGrant) == []
    assert [e.detail["rule"] for e in events(core, "clearance.denied")] == [rule]
    assert metric(core, "qtestbed_clearance_denials_total", rule=rule, stage="dispatch") == 1


async def test_a_change_that_still_allows_the_job_lets_it_leave(
    core: Core, monkeypatch: pytest.MonkeyPatch
) -> None:
    driver = await attested(core)
    job_id = await queued(core)
    during_lease_write(core, monkeypatch, replica_amends(core, "alice", affiliation="elsewhere"))
    await core.pump()
    assert [g.job_id for g in driver.grants()] == [job_id]
    assert (await job_of(core, job_id)).state is JobState.DISPATCHED
    assert events(core, "clearance.denied") == []
    # The dispatcher decided on the reloaded records.
    alice = core.parts.registries.access.principal("alice")
    assert alice is not None
    assert alice.affiliation == "elsewhere"


async def test_an_attestation_expired_during_the_lease_write_keeps_the_job_home(
    core: Core, monkeypatch: pytest.MonkeyPatch
) -> None:
    driver = await attested(core)
    job_id = await queued(core)
    attestation = connection(driver).attestation
    assert attestation is not None
    lapse = attestation.expires_at - core.clock.now() + 1
    during_lease_write(core, monkeypatch, lambda: core.clock.advance(lapse))
    await core.pump()
    job = await job_of(core, job_id)
    assert (job.state, job.attempts, job.lease) == (JobState.QUEUED, 1, None)
    assert only(driver.heard(), m.LeaseGrant) == []
    [requeued] = events(core, "job.requeued")
    assert requeued.detail["cause"] == "device stopped accepting work before dispatch"
    assert events(core, "clearance.denied") == []


async def test_a_connection_dropped_during_the_lease_write_is_sent_nothing(
    core: Core, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hub dropped the connection (route taken over, Goodbye, silence) while the lease was
    written, before it was stored: the grant is not sent to the gone connection's route."""
    driver = await attested(core)
    job_id = await queued(core)
    peer = connection(driver).peer
    during_lease_write(core, monkeypatch, lambda: core.parts.jobs.fleet.remove(peer))
    await core.pump()
    job = await job_of(core, job_id)
    assert (job.state, job.lease) == (JobState.QUEUED, None)
    assert only(driver.heard(), m.LeaseGrant) == []
