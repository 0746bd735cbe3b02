"""The whole job path with a queue far longer than the scheduler's window (4 jobs a lane):
every position a researcher sees, in memory or counted by the store, is exact, and the driver
is granted the jobs in exactly that order while the windows refill; a broker restarted on the
same store shows the same positions."""

from __future__ import annotations

from broker.jobs.model import PRIORITY_HIGH, PRIORITY_LOW, PRIORITY_NORMAL, Job
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


async def test_a_job_queued_past_the_window_is_placed_by_its_own_insert_call() -> None:
    """Past its lane's window only the store can place a new job: the submit's answer then
    carries the store's count, made in the insert's own store call (one store call per
    submit, not a second one for the position), and it is the exact position."""
    core = await Core(scheduling={"window_jobs": 4}).start()
    try:
        await core.register()
        submission = core.parts.services.submission
        shown, calls = [], []
        for _ in range(10):
            core.clock.advance(1.0)
            before = core.runner.calls
            [(view, created)] = await submission.submit_many("alice", [request()])
            assert created
            calls.append(core.runner.calls - before)
            shown.append(view.queue_position)
        assert shown == list(range(1, 11))
        assert calls[4:] == [1] * 6  # the lane holds 4 or more: placed by the insert's call
        lane: list[Job] = await core.runner.call(core.store.queued_jobs, "dev-open", 100)
        assert [core.store.queue_position(job) for job in lane] == shown
    finally:
        core.close()


async def test_a_batch_past_the_window_is_placed_exactly_in_one_insert_call() -> None:
    """A SubmitJobs batch over two projects and two devices, lab's lanes past their windows:
    the store counts the batch's jobs of a device together, in the insert's own call, and
    every position answered is the one the job then has."""
    core = await Core(scheduling={"window_jobs": 4}).start()
    try:
        await core.register()
        await core.register("dev-b")
        await amend_principal(core, "alice", projects=("lab", "ops"))
        submission = core.parts.services.submission
        for _ in range(6):  # past the window of lab's lane on both devices
            core.clock.advance(1.0)
            await submission.submit_many(
                "alice", [request(project="lab"), request("dev-b", project="lab")]
            )
        core.clock.advance(1.0)
        batch = [
            request(d, project=p) for p in ("lab", "ops", "lab") for d in ("dev-open", "dev-b")
        ]
        answered = await submission.submit_many("alice", batch)
        for view, created in answered:
            assert created
            assert view.queue_position == core.store.queue_position(view.job)
        for device in ("dev-open", "dev-b"):
            shown = [v.queue_position for v, _ in answered if v.job.device_id == device]
            assert len(set(shown)) == 3  # ops' job takes its fair place among lab's
    finally:
        core.close()


async def test_a_shallow_lane_behind_a_deep_one_is_placed_by_its_own_insert_call() -> None:
    """A researcher's few jobs behind another project's thousands: the new job's own lane is
    short, but its slot lies past where the deep lane's window reaches, so only the store can
    count the slots ahead of it. The insert's own store call counts it (before, a second store
    call did, gathered with others after a wait: bench_hostile's bob waited ~5 ms each)."""
    core = await Core(scheduling={"window_jobs": 4}).start()
    try:
        await core.register()
        await amend_principal(core, "alice", projects=("lab", "ops"))
        submission = core.parts.services.submission
        for _ in range(12):  # the deep lane: ops, three windows long
            core.clock.advance(1.0)
            await queued(core, "alice", request(project="ops"))
        core.clock.advance(1.0)
        await queued(core, "bob", request(project="lab"))  # lab's first job: its lane is read
        shown, calls = [], []
        for _ in range(3):  # the shallow lane: lab, fair share places it among ops's slots
            core.clock.advance(1.0)
            before = core.runner.calls
            [(view, created)] = await submission.submit_many("bob", [request(project="lab")])
            assert created
            calls.append(core.runner.calls - before)
            shown.append((view.job, view.queue_position))
        assert calls == [1, 1, 1]  # the insert's call, and no other
        for job, position in shown:
            assert core.store.queue_position(job) == position  # exact
    finally:
        core.close()


async def test_a_job_whose_tag_will_not_be_read_back_is_placed_by_its_own_insert_call() -> None:
    """A lane holding half a window of tags or more is not read again for the next job's tag
    (which the store computes), so the windows cannot place that job: its insert counts it."""
    core = await Core(scheduling={"window_jobs": 8}).start()
    try:
        await core.register()
        submission = core.parts.services.submission
        calls, shown = [], []
        for _ in range(7):  # up to just short of the window
            core.clock.advance(1.0)
            before = core.runner.calls
            [(view, _)] = await submission.submit_many("alice", [request()])
            calls.append(core.runner.calls - before)
            shown.append(view.queue_position)
        assert shown == list(range(1, 8))
        assert calls[4:] == [1, 1, 1]  # 4 tags held (half of 8): the insert's call alone
    finally:
        core.close()
