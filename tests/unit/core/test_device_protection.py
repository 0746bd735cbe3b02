"""Separation of duties for a device's protection: an operator re-registering a device cannot
lower its tier (it would become visible and dispatchable to principals cleared only for the
lower tier); the refusal names the device grant to ask for instead, is counted by rule and
audited, and leaves the record as it was. Raising the tier, or keeping it, stays an operator's
edit; the facility file seeds only devices the store does not know, so it cannot lower one."""

from __future__ import annotations

import pytest

from broker.devices.model import ReferenceScope
from broker.devices.registry import ReferenceInput, SeedDevice
from broker.errors import BrokerError, ErrorCode
from tests.unit.core.harness import Core, events, metric

RULE = "access.device-lowering"


def _visible_to(core: Core, principal: str, device_id: str) -> bool:
    device = core.parts.registries.devices.get(device_id)
    return core.parts.registries.gate.visible_by_id(principal, device_id, device, core.clock.now())


async def test_re_registering_cannot_lower_a_devices_tier(core: Core) -> None:
    kit = await core.register("dev-secret", tier="restricted")
    assert not _visible_to(core, "alice", "dev-secret")
    admin = core.parts.services.device_admin
    with pytest.raises(BrokerError) as refused:
        await admin.register("olivia", kit.chain, "open", "dev-secret")
    error = refused.value
    assert error.code is ErrorCode.PERMISSION_DENIED
    assert error.rule_id == RULE
    assert "qtestbed access request --device dev-secret" in error.detail
    record = core.parts.registries.devices.get("dev-secret")
    assert record is not None
    assert record.tier == "restricted"
    assert record.version == 1  # nothing was written
    assert not _visible_to(core, "alice", "dev-secret")
    assert metric(core, "qtestbed_access_refusals_total", rule=RULE) == 1
    [audited] = events(core, "access.device.refused")
    assert (audited.actor, audited.subject) == ("olivia", "dev-secret")
    assert audited.detail["rule"] == RULE
    assert audited.detail["tier"] == "open"


async def test_keeping_or_raising_a_devices_tier_is_an_operators_edit(core: Core) -> None:
    kit = await core.register("dev-open", tier="open")
    admin = core.parts.services.device_admin
    assert (await admin.register("olivia", kit.chain, "open", "renamed")).model == "renamed"
    assert (await admin.register("olivia", kit.chain, "restricted", "renamed")).tier == (
        "restricted"
    )
    assert metric(core, "qtestbed_access_refusals_total", rule=RULE) == 0


async def test_the_facility_file_cannot_lower_a_registered_device(core: Core) -> None:
    kit = await core.register("dev-secret", tier="restricted")
    registry = core.parts.registries.devices
    reference = ReferenceInput(
        scope=ReferenceScope.DEVICE,
        scope_id="dev-secret",
        firmware=frozenset({"fw-other"}),
        control_software=frozenset({"ctl-1"}),
        driver_build=frozenset({"drv-1"}),
        calibration_digest=frozenset({"x"}),
        num_qubits=5,
    )
    seed = SeedDevice(tier="open", model="dev-secret", chain_pem=kit.chain, reference=reference)
    await registry.seed([seed])
    record = registry.get("dev-secret")
    assert record is not None
    assert record.tier == "restricted"
    assert record.version == 1
