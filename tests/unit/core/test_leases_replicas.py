"""Leases across broker replicas (broker/link/replicas.py, leases.py): a lease names the
replica that wrote it; survivors give back at once, without charging an attempt, the jobs
leased by a replica that stopped, and leave a live replica's leases to it."""

from __future__ import annotations

import pytest

from broker.jobs.model import JobState
from broker.link import messages as m
from broker.link.replicas import ReplicaRoster
from tests.unit.core.harness import (
    Core,
    Driver,
    attested,
    events,
    job_of,
    metric,
    queued,
)


async def _leased(core: Core) -> tuple[Driver, m.LeaseGrant]:
    driver = await attested(core)
    await queued(core)
    await core.pump()
    [grant] = driver.grants()
    return driver, grant


def _as_a_survivor(core: Core) -> ReplicaRoster:
    """This broker, from now on, is another replica than the one that wrote the leases."""
    roster = core.parts.link.roster
    roster.replica_id = "survivor"
    return roster


async def test_a_lease_names_the_replica_that_wrote_it(core: Core) -> None:
    _, grant = await _leased(core)
    assert ReplicaRoster.issuer(grant.lease_id) == core.parts.link.roster.replica_id
    assert ReplicaRoster.issuer("0123abcd") is None  # written before leases named replicas
    assert ReplicaRoster.issuer(".x") is None


async def test_the_jobs_of_a_replica_that_stopped_are_requeued_uncharged(core: Core) -> None:
    _, grant = await _leased(core)
    _as_a_survivor(core)  # the memory store shares no process: the writer is gone
    await core.parts.link.leases.reap(core.clock.now())
    job = await job_of(core, grant.job_id)
    assert (job.state, job.lease, job.attempts) == (JobState.QUEUED, None, 0)
    assert "replica that leased it stopped" in job.reason
    [requeued] = events(core, "job.requeued")
    assert requeued.detail["charged"] is False
    cause = {"device": "dev-open", "cause": "replica_lost"}
    assert metric(core, "qtestbed_lease_requeues_total", **cause) == 1


async def test_a_live_replicas_lease_is_left_to_it(
    core: Core, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, grant = await _leased(core)
    roster = _as_a_survivor(core)

    async def alive(replica_id: str) -> bool:
        return True

    monkeypatch.setattr(roster, "alive", alive)
    # Long past the grace after which a lease no connection here holds would be orphaned.
    core.clock.advance(30)
    await core.parts.link.leases.reap(core.clock.now())
    assert (await job_of(core, grant.job_id)).state is JobState.DISPATCHED
    assert events(core, "job.requeued") == []
