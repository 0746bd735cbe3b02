"""DeviceSchedule: operating states, maintenance windows and reservations as the operator sets
them, what a device's queue may do at each moment (the fake clock moves into the windows), and
that every write is audited with its kind."""

from __future__ import annotations

import pytest

from broker.access.model import RecordKind
from broker.devices.model import OperatingState, Window, WindowKind
from broker.devices.operations import WindowRequest
from broker.errors import BrokerError, ErrorCode
from tests.unit.core.harness import Core, audit_mark, audit_since, metric

DAY = 86_400.0


def _maintenance(start: float, end: float) -> WindowRequest:
    return WindowRequest(kind=WindowKind.MAINTENANCE, starts_at=start, ends_at=end)


def _reservation(start: float, end: float, project: str = "lab") -> WindowRequest:
    return WindowRequest(kind=WindowKind.RESERVATION, starts_at=start, ends_at=end, project=project)


async def _add(core: Core, request: WindowRequest, device_id: str = "dev-open") -> Window:
    _, window = await core.parts.registries.schedule.add_window("olivia", device_id, request)
    return window


async def _refused(core: Core, request: WindowRequest) -> BrokerError:
    with pytest.raises(BrokerError) as info:
        await _add(core, request)
    return info.value


@pytest.fixture
async def device(core: Core) -> Core:
    await core.register()
    return core


async def test_setting_a_state_is_audited_counted_and_versioned(device: Core) -> None:
    core = device
    schedule = core.parts.registries.schedule
    mark = audit_mark(core)
    ops = await schedule.set_state("olivia", "dev-open", OperatingState.DRAINING, "move")
    assert (ops.state, ops.reason) == (OperatingState.DRAINING, "move")
    [event] = audit_since(core, mark)
    assert (event.kind, event.actor, event.subject) == ("access.device.state", "olivia", "dev-open")
    assert event.detail == {"state": "draining", "reason": "move"}
    assert metric(core, "qtestbed_access_changes_total", kind="device") == 1
    assert core.parts.registries.records.version(RecordKind.DEVICE, "dev-open") == 1
    await schedule.set_state("olivia", "dev-open", OperatingState.ONLINE, "")
    assert core.parts.registries.records.version(RecordKind.DEVICE, "dev-open") == 2


@pytest.mark.parametrize(
    ("state", "runs"),
    [
        (OperatingState.ONLINE, True),
        (OperatingState.DRAINING, True),
        (OperatingState.MAINTENANCE, False),
        (OperatingState.RETIRED, False),
    ],
)
async def test_a_state_says_whether_the_queue_moves(
    device: Core, state: OperatingState, runs: bool
) -> None:
    schedule = device.parts.registries.schedule
    await schedule.set_state("olivia", "dev-open", state, "")
    available = schedule.availability("dev-open", device.clock.now())
    assert (available.runs_jobs, available.projects) == (runs, None)


async def test_a_retired_device_tells_waiting_researchers_to_go_elsewhere(device: Core) -> None:
    schedule = device.parts.registries.schedule
    await schedule.set_state("olivia", "dev-open", OperatingState.RETIRED, "decommissioned")
    why = schedule.availability("dev-open", device.clock.now()).why
    assert why == (
        "device dev-open is retired (decommissioned); it will not run jobs again: "
        "cancel and submit to another device"
    )


async def test_an_unknown_device_has_no_schedule_to_change(core: Core) -> None:
    mark = audit_mark(core)
    with pytest.raises(BrokerError) as info:
        await core.parts.registries.schedule.set_state(
            "olivia", "dev-ghost", OperatingState.MAINTENANCE, ""
        )
    assert (info.value.code, info.value.detail) == (
        ErrorCode.NOT_FOUND,
        "device 'dev-ghost' not found",
    )
    assert audit_since(core, mark) == []


async def test_a_maintenance_window_stops_the_queue_only_while_it_is_open(device: Core) -> None:
    core = device
    schedule = core.parts.registries.schedule
    now = core.clock.now()
    mark = audit_mark(core)
    window = await _add(core, _maintenance(now + 60, now + 120))
    [event] = audit_since(core, mark)
    assert (event.kind, event.actor) == ("access.device.maintenance.added", "olivia")
    assert event.detail["window"] == window.window_id
    assert schedule.availability("dev-open", core.clock.now()).runs_jobs
    core.clock.advance(60)
    inside = schedule.availability("dev-open", core.clock.now())
    assert not inside.runs_jobs
    assert inside.why.startswith("device dev-open is in a maintenance window until ")
    core.clock.advance(60)
    assert schedule.availability("dev-open", core.clock.now()).runs_jobs


async def test_a_reservation_lets_only_its_project_run_while_it_is_open(device: Core) -> None:
    core = device
    schedule = core.parts.registries.schedule
    now = core.clock.now()
    mark = audit_mark(core)
    await _add(core, _reservation(now + 60, now + 120, "ops"))
    [event] = audit_since(core, mark)
    assert event.kind == "access.device.reservation.added"
    assert event.detail["project"] == "ops"
    assert schedule.availability("dev-open", core.clock.now()).projects is None
    core.clock.advance(60)
    inside = schedule.availability("dev-open", core.clock.now())
    assert (inside.runs_jobs, inside.projects) == (True, ("ops",))
    assert inside.why.startswith("device dev-open is reserved for project ops until ")
    core.clock.advance(60)
    assert schedule.availability("dev-open", core.clock.now()).projects is None


async def test_an_overlapping_reservation_is_refused_and_names_the_one_in_the_way(
    device: Core,
) -> None:
    core = device
    now = core.clock.now()
    held = await _add(core, _reservation(now + 100, now + 200, "lab"))
    mark = audit_mark(core)
    refused = await _refused(core, _reservation(now + 150, now + 250, "ops"))
    assert refused.code is ErrorCode.FAILED_PRECONDITION
    assert "is already reserved for project lab" in refused.detail
    assert f"(window {held.window_id})" in refused.detail
    assert audit_since(core, mark) == []
    assert core.parts.registries.schedule.operations("dev-open").windows == (held,)


async def test_back_to_back_reservations_do_not_overlap(device: Core) -> None:
    now = device.clock.now()
    await _add(device, _reservation(now + 100, now + 200, "lab"))
    await _add(device, _reservation(now + 200, now + 300, "ops"))
    assert len(device.parts.registries.schedule.operations("dev-open").windows) == 2


async def test_maintenance_may_overlap_a_reservation(device: Core) -> None:
    now = device.clock.now()
    await _add(device, _reservation(now + 100, now + 200))
    await _add(device, _maintenance(now + 150, now + 160))
    assert len(device.parts.registries.schedule.operations("dev-open").windows) == 2


@pytest.mark.parametrize(
    ("start", "end", "kind", "project", "says"),
    [
        (-100, -10, WindowKind.MAINTENANCE, "", "that window has already ended"),
        (-100, 0, WindowKind.RESERVATION, "lab", "that window has already ended"),
        (100, 100, WindowKind.MAINTENANCE, "", "a window must end after it starts"),
        (0, 367 * DAY, WindowKind.MAINTENANCE, "", "a window may last at most 366 days"),
        (10, 20, WindowKind.RESERVATION, "nowhere", "project 'nowhere' does not exist"),
        (10, 20, WindowKind.MAINTENANCE, "lab", "a maintenance window is for the whole device"),
    ],
    ids=["ended", "ends-now", "empty", "too-long", "unknown-project", "maintenance-project"],
)
async def test_a_malformed_window_is_invalid_argument_and_writes_nothing(
    device: Core, start: float, end: float, kind: WindowKind, project: str, says: str
) -> None:
    now = device.clock.now()
    mark = audit_mark(device)
    request = WindowRequest(kind=kind, starts_at=now + start, ends_at=now + end, project=project)
    refused = await _refused(device, request)
    assert refused.code is ErrorCode.INVALID_ARGUMENT
    assert says in refused.detail
    assert audit_since(device, mark) == []
    assert device.parts.registries.schedule.operations("dev-open").windows == ()


async def test_removing_a_window_is_audited_and_an_unknown_one_is_not_found(device: Core) -> None:
    core = device
    schedule = core.parts.registries.schedule
    now = core.clock.now()
    window = await _add(core, _maintenance(now + 10, now + 20))
    mark = audit_mark(core)
    ops = await schedule.remove_window("olivia", "dev-open", window.window_id)
    assert ops.windows == ()
    [event] = audit_since(core, mark)
    assert (event.kind, event.detail) == (
        "access.device.window.removed",
        {"window": window.window_id},
    )
    with pytest.raises(BrokerError) as info:
        await schedule.remove_window("olivia", "dev-open", window.window_id)
    assert info.value.code is ErrorCode.NOT_FOUND


async def test_ended_windows_are_dropped_on_the_next_write(device: Core) -> None:
    core = device
    now = core.clock.now()
    await _add(core, _maintenance(now + 10, now + 20))
    core.clock.advance(30)
    kept = await _add(core, _maintenance(core.clock.now() + 10, core.clock.now() + 20))
    assert core.parts.registries.schedule.operations("dev-open").windows == (kept,)


async def test_a_reservation_that_has_ended_does_not_block_a_new_one(device: Core) -> None:
    core = device
    start = core.clock.now()
    await _add(core, _reservation(start + 10, start + 20, "lab"))
    core.clock.advance(30)  # the lab reservation ended 10 s ago
    now = core.clock.now()
    # "From now", stamped by an operator's clock a little behind the broker's.
    window = await _add(core, _reservation(now - 15, now + 3600, "ops"))
    assert core.parts.registries.schedule.operations("dev-open").windows == (window,)
