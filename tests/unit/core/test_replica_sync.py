"""Changes heard from other replicas (broker/wiring/replicas.py): a job another replica queued
is read into this replica's queue and dispatched at once; a payload naming a device this
replica does not know costs one registry check and grows nothing."""

from __future__ import annotations

import asyncio

import pytest

from broker.store.changes import Change
from tests.unit.core.harness import Core, attested, queued


async def _settle(task_count: int = 50) -> None:
    for _ in range(task_count):
        await asyncio.sleep(0)


async def test_a_job_queued_by_another_replica_is_dispatched_when_heard(
    core: Core, monkeypatch: pytest.MonkeyPatch
) -> None:
    driver = await attested(core)
    scheduler, wakeups = core.parts.jobs.scheduler, core.parts.registries.wakeups
    # As on PostgreSQL, other writers share the store; this job is queued as another replica
    # would queue it: written to the store without this replica's scheduler seeing the write.
    monkeypatch.setattr(core.store, "replicated", True)
    with monkeypatch.context() as elsewhere:
        elsewhere.setattr(core.parts.jobs.ledger, "_observe", lambda job: None)
        job_id = await queued(core)
    assert scheduler.depth("dev-open") == 0
    while wakeups.take() is not None:
        pass
    sync = core.parts.link.replicas
    task = asyncio.create_task(sync.run())
    try:
        sync.heard(Change("jobs", "device-nobody-registered"))
        sync.heard(Change("jobs", "dev-open"))
        await _settle()
    finally:
        task.cancel()
    assert scheduler.depth("dev-open") == 1
    assert scheduler.depth("device-nobody-registered") == 0
    await core.pump()
    [grant] = driver.grants()
    assert grant.job_id == job_id
