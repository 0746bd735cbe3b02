"""Device selection: a request may describe a device instead of naming one; the broker picks an
attested device the caller may use, and says NOT_FOUND (naming only the selector) otherwise."""

from __future__ import annotations

from typing import Any

import pytest

from broker.devices.model import OperatingState
from broker.errors import BrokerError, ErrorCode
from broker.jobs.selection import DeviceSelector
from broker.jobs.submit import SubmitRequest
from broker.jobs.views import JobView
from tests.unit.core.harness import Core, amend_principal, attested, ghz, request, stored_jobs


def _described(selector: DeviceSelector, **changes: Any) -> SubmitRequest:
    return request("", selector=selector, **changes)


async def _selected(core: Core, selector: DeviceSelector, **changes: Any) -> JobView:
    submission = core.parts.services.submission
    [(view, created)] = await submission.submit_many("alice", [_described(selector, **changes)])
    assert created
    return view


async def _refused(core: Core, selector: DeviceSelector, **changes: Any) -> BrokerError:
    submission = core.parts.services.submission
    with pytest.raises(BrokerError) as info:
        await submission.submit_many("alice", [_described(selector, **changes)])
    return info.value


async def test_a_selector_picks_the_attested_device_the_caller_may_use(core: Core) -> None:
    await core.register("dev-a")  # registered, never attested
    await attested(core, "dev-b", tier="restricted")  # attested, above alice's tier
    await attested(core, "dev-z")
    view = await _selected(core, DeviceSelector(min_qubits=2))
    assert view.job.device_id == "dev-z"
    assert view.job.project == "lab"
    assert core.parts.jobs.scheduler.depth("dev-z") == 1


async def test_a_selector_prefers_the_device_with_the_shorter_queue(core: Core) -> None:
    await attested(core, "dev-a")
    await attested(core, "dev-b")
    await core.parts.services.submission.submit_many("alice", [request("dev-a")])
    view = await _selected(core, DeviceSelector())
    assert view.job.device_id == "dev-b"


async def test_a_selector_skips_a_device_in_maintenance(core: Core) -> None:
    await attested(core, "dev-a")
    await attested(core, "dev-b")
    await core.parts.registries.schedule.set_state(
        "olivia", "dev-a", OperatingState.MAINTENANCE, "recalibrating"
    )
    assert (await _selected(core, DeviceSelector())).job.device_id == "dev-b"


@pytest.mark.parametrize(
    "selector",
    [
        DeviceSelector(min_qubits=50),
        DeviceSelector(basis_gates=frozenset({"ccx"})),
        DeviceSelector(tier="restricted"),
        DeviceSelector(max_two_qubit_error=0.001),
    ],
    ids=["qubits", "basis", "hidden-tier", "error"],
)
async def test_a_selector_nothing_matches_is_not_found_naming_only_the_selector(
    core: Core, selector: DeviceSelector
) -> None:
    await attested(core, "dev-open")  # 5 qubits, attested two-qubit error 0.01
    await attested(core, "dev-secret", tier="restricted")
    refused = await _refused(core, selector)
    assert refused.code is ErrorCode.NOT_FOUND
    assert refused.detail.startswith("no attested device you may use matches the selector now")
    assert selector.describe() in refused.detail
    assert "dev-" not in refused.detail
    assert stored_jobs(core) == []


async def test_a_selector_with_no_attested_device_is_not_found(core: Core) -> None:
    await core.register()
    refused = await _refused(core, DeviceSelector())
    assert refused.code is ErrorCode.NOT_FOUND
    assert stored_jobs(core) == []


async def test_a_selector_never_picks_a_device_too_small_for_the_circuit(core: Core) -> None:
    await attested(core, "dev-a", num_qubits=2)
    await attested(core, "dev-b", num_qubits=5)
    view = await _selected(core, DeviceSelector(), payload=ghz(3))
    assert view.job.device_id == "dev-b"


async def test_a_selector_passes_over_a_device_at_its_queue_bound_for_the_project() -> None:
    """dev-a and dev-b wait alike (100 queued each, the tie going to dev-a), but dev-a is at its
    bound of 100 with lab's share of it (50) used: the job goes to dev-b, which takes it."""
    core = await Core(admission={"max_queued_per_device": 100}).start()
    try:
        await attested(core, "dev-a")
        await attested(core, "dev-b")
        await amend_principal(core, "bob", projects=("ops",))
        submission = core.parts.services.submission
        await submission.submit_many("alice", [request("dev-a")] * 50)
        await submission.submit_many("bob", [request("dev-a")] * 50)
        await submission.submit_many("bob", [request("dev-b")] * 100)
        assert (await _selected(core, DeviceSelector())).job.device_id == "dev-b"
    finally:
        core.close()
