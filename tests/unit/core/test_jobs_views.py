"""What a queued job's owner sees: its exact position, an ETA, the device's queue depth and,
while it waits, why; and that a held queue really does not move."""

from __future__ import annotations

from broker.devices.model import OperatingState, WindowKind
from broker.devices.operations import WindowRequest
from broker.jobs.model import Job
from broker.jobs.views import JobView
from tests.unit.core.harness import Core, attested, request


async def _queued(core: Core, caller: str = "alice") -> Job:
    [(view, _)] = await core.parts.services.submission.submit_many(caller, [request()])
    return view.job


async def _view(core: Core, job: Job, caller: str = "alice") -> JobView:
    return await core.parts.services.jobs.get(caller, job.job_id)


async def test_queued_jobs_show_position_eta_depth_and_the_missing_driver(core: Core) -> None:
    await core.register()
    jobs = []
    for _ in range(3):
        jobs.append(await _queued(core))
        core.clock.advance(1)  # one second apart: a strict submission order
    now = core.clock.now()
    views = [await _view(core, job) for job in jobs]
    assert [v.queue_position for v in views] == [1, 2, 3]
    # Until the device has finished a job, one second per job ahead is assumed.
    assert [v.eta for v in views] == [now, now + 1, now + 2]
    assert {v.device_queue_depth for v in views} == {3}
    assert {v.waiting_for for v in views} == {
        "device dev-open has no freshly attested driver connected"
    }


async def test_a_position_moves_up_when_a_job_ahead_is_cancelled(core: Core) -> None:
    await core.register()
    first = await _queued(core)
    core.clock.advance(1)
    second = await _queued(core)
    assert (await _view(core, second)).queue_position == 2
    await core.parts.services.jobs.cancel("alice", first.job_id, "")
    view = await _view(core, second)
    assert (view.queue_position, view.device_queue_depth) == (1, 1)


async def test_a_job_on_an_attested_idle_device_waits_for_nothing(core: Core) -> None:
    await attested(core)
    view = await _view(core, await _queued(core))
    assert (view.queue_position, view.waiting_for) == (1, "")


async def test_a_device_in_maintenance_holds_its_queue_and_says_why(core: Core) -> None:
    driver = await attested(core)
    job = await _queued(core)
    schedule = core.parts.registries.schedule
    await schedule.set_state("olivia", "dev-open", OperatingState.MAINTENANCE, "fridge warm-up")
    view = await _view(core, job)
    assert view.queue_position == 1
    assert view.waiting_for == "device dev-open is maintenance (fridge warm-up)"
    await core.pump()
    assert driver.grants() == []
    await schedule.set_state("olivia", "dev-open", OperatingState.ONLINE, "")
    assert (await _view(core, job)).waiting_for == ""
    await core.pump()
    assert [g.job_id for g in driver.grants()] == [job.job_id]


async def test_a_maintenance_window_holds_the_queue_only_while_it_is_open(core: Core) -> None:
    driver = await attested(core)
    now = core.clock.now()
    window = WindowRequest(kind=WindowKind.MAINTENANCE, starts_at=now + 10, ends_at=now + 20)
    await core.parts.registries.schedule.add_window("olivia", "dev-open", window)
    job = await _queued(core)
    core.clock.advance(10)
    view = await _view(core, job)
    assert view.waiting_for.startswith("device dev-open is in a maintenance window until ")
    await core.pump()
    assert driver.grants() == []
    core.clock.advance(10)  # the window is half-open: it has ended now
    assert (await _view(core, job)).waiting_for == ""
    core.parts.registries.wakeups.kick("dev-open")  # the broker's tick does this
    await core.pump()
    assert [g.job_id for g in driver.grants()] == [job.job_id]


async def test_a_reservation_for_another_project_holds_the_job_and_names_the_project(
    core: Core,
) -> None:
    driver = await attested(core)
    now = core.clock.now()
    window = WindowRequest(
        kind=WindowKind.RESERVATION, starts_at=now + 10, ends_at=now + 100, project="ops"
    )
    await core.parts.registries.schedule.add_window("olivia", "dev-open", window)
    job = await _queued(core)
    core.clock.advance(10)
    view = await _view(core, job)
    assert view.waiting_for.startswith("device dev-open is reserved for project ops until ")
    await core.pump()
    assert driver.grants() == []
