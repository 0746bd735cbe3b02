"""The whole job path with a queue far longer than the scheduler's window (4 jobs a lane):
every position a researcher sees, in memory or counted by the store, is exact, and the driver
is granted the jobs in exactly that order while the windows refill; a broker restarted on the
same store shows the same positions."""

from __future__ import annotations

from broker.jobs.model import PRIORITY_HIGH, PRIORITY_LOW, PRIORITY_NORMAL
from broker.jobs.scheduler import Scheduler
from tests.unit.core.harness import Core, amend_principal, attested, queued, request

PRIORITIES = (PRIORITY_LOW, PRIORITY_NORMAL, PRIORITY_HIGH)


async def _positions(core: Core, owner_of: dict[str, str]) -> dict[str, int]:
    jobs = core.parts.services.jobs
    return {
        job_id: (await jobs.get(owner, job_id)).queue_position for job_id, owner in owner_of.items()
    }


async def test_a_queue_past_the_window_runs_in_the_order_its_positions_show() -> None:
    core = await Core(scheduling={"window_jobs": 4, "aging_seconds": 5.0}).start()
    await amend_principal(core, "alice", projects=("lab", "ops"))
    driver = await attested(core)
    owner_of: dict[str, str] = {}
    await core.pump()
    for n in range(30):
        owner, project = [("alice", "lab"), ("bob", "lab"), ("alice", "ops")][n % 3]
        asked = request(project=project, priority=PRIORITIES[n * 7 % 3], shots=(10, 100)[n % 2])
        core.clock.advance(1.0)
        owner_of[await queued(core, owner, asked)] = owner
    shown = await _positions(core, owner_of)
    assert sorted(shown.values()) == list(range(1, 31))
    scheduler = core.parts.jobs.scheduler
    assert scheduler.held("dev-open") <= 2 * 4

    restarted = Scheduler(scheduler.settings, weight_of=scheduler.weight_of, runner=core.runner)
    await restarted.load()
    for job_id, owner in owner_of.items():
        job = await core.parts.jobs.ledger.get(job_id)
        assert job is not None
        assert await restarted.position(job) == shown[job_id], owner

    granted = []
    await core.pump()
    while grants := driver.grants():
        [grant] = grants
        granted.append(grant.job_id)
        await driver.finish(grant)
        await core.pump()
    assert granted == sorted(shown, key=shown.__getitem__)
