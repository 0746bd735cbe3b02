"""The device registry, export classes and device admin (broker/devices/): which chains register,
reference values by version, release only after a passing attestation, revocation, and the
export class following attested calibration."""

from __future__ import annotations

import datetime as dt

import pytest

from attestation.calibration import CalibrationWindows, Tolerance
from attestation.keys import KeyKind, SigningKey
from attestation.pki import create_ca
from broker.devices.model import DeviceStatus, ReferenceScope
from broker.devices.registry import ReferenceInput
from broker.errors import BrokerError, ErrorCode
from broker.link import messages as m
from tests.unit.core.harness import (
    CALIBRATION,
    Core,
    attested,
    device_chain,
    events,
    metric,
    only,
)


def _reference(firmware: str) -> ReferenceInput:
    return ReferenceInput(
        scope=ReferenceScope.DEVICE,
        scope_id="dev-open",
        firmware=frozenset({firmware}),
        control_software=frozenset({"ctl-1"}),
        driver_build=frozenset({"drv-1"}),
        calibration_digest=frozenset({CALIBRATION}),
        num_qubits=5,
    )


async def _refused(core: Core, chain: bytes) -> BrokerError:
    with pytest.raises(BrokerError) as info:
        await core.parts.services.device_admin.register("olivia", chain, "open", "")
    return info.value


async def test_a_chain_from_another_ca_is_refused(core: Core) -> None:
    rogue_key = SigningKey.generate(KeyKind.ECDSA_P256)
    when = dt.datetime.fromtimestamp(core.clock.now() - 300, dt.UTC)
    rogue = create_ca("rogue root", rogue_key, now=when, days=365)
    chain = device_chain(
        core, "dev-rogue", SigningKey.generate(KeyKind.ED25519), ca=(rogue_key, rogue)
    )
    error = await _refused(core, chain)
    assert error.code is ErrorCode.INVALID_ARGUMENT
    assert core.parts.registries.devices.get("dev-rogue") is None
    assert events(core, "device.registered") == []


async def test_a_revoked_device_id_cannot_be_registered_again(core: Core) -> None:
    kit = await core.register()
    await core.parts.services.device_admin.revoke("sam", "dev-open", "stolen")
    same = await _refused(core, kit.chain)  # its certificate is revoked
    assert same.code is ErrorCode.INVALID_ARGUMENT
    fresh = device_chain(core, "dev-open", SigningKey.generate(KeyKind.ED25519))
    error = await _refused(core, fresh)  # a new certificate for the revoked id
    assert error.code is ErrorCode.FAILED_PRECONDITION
    record = core.parts.registries.devices.get("dev-open")
    assert record is not None
    assert (record.status, record.certificate_chain_pem) == (DeviceStatus.REVOKED, kit.chain)
    assert len(events(core, "device.registered")) == 1


async def test_reference_values_are_versioned_and_the_newest_is_used(core: Core) -> None:
    await core.register()
    registry = core.parts.registries.devices
    stored = await registry.set_reference("olivia", _reference("fw-2"))
    assert stored.version == 2
    versions = await registry.references(ReferenceScope.DEVICE, "dev-open")
    assert [(v.version, v.firmware) for v in versions] == [
        (2, frozenset({"fw-2"})),
        (1, frozenset({"fw-1"})),
    ]
    reference = registry.reference_for("dev-open")
    assert reference is not None
    assert (reference.version, reference.firmware) == (2, frozenset({"fw-2"}))
    assert registry.reference_label("dev-open") == "device:dev-open:v2"
    assert len(events(core, "reference.published")) == 2
    driver = core.driver()
    old = await driver.attest()  # still measuring fw-1, which version 2 no longer lists
    assert not old.affirming
    assert any(r.startswith("MEASUREMENT_FIRMWARE") for r in old.reasons)


async def test_release_needs_a_passing_attestation_since_the_quarantine(core: Core) -> None:
    await core.register()
    admin = core.parts.services.device_admin
    assert not (await core.driver().attest(firmware="fw-bad")).affirming
    with pytest.raises(BrokerError) as info:
        await admin.release("olivia", "dev-open", "looks fine")
    assert info.value.code is ErrorCode.FAILED_PRECONDITION
    record = core.parts.registries.devices.get("dev-open")
    assert record is not None
    assert record.status is DeviceStatus.QUARANTINED
    core.clock.advance(1)
    assert (await core.driver().attest()).affirming
    released = await admin.release("olivia", "dev-open", "firmware restored")
    assert released.status is DeviceStatus.ACTIVE
    [event] = events(core, "device.released")
    assert (event.actor, event.detail["from"]) == ("olivia", "QUARANTINED")
    assert core.parts.registries.devices.accepts_work("dev-open")


async def test_only_a_quarantined_device_can_be_released(core: Core) -> None:
    await attested(core)
    with pytest.raises(BrokerError) as info:
        await core.parts.services.device_admin.release("olivia", "dev-open", "")
    assert info.value.code is ErrorCode.FAILED_PRECONDITION
    assert events(core, "device.released") == []


async def test_revoke_adds_the_serial_and_makes_the_device_revoked(core: Core) -> None:
    driver = await attested(core)
    registry = core.parts.registries.devices
    before = registry.get("dev-open")
    assert before is not None
    record = await core.parts.services.device_admin.revoke("sam", "dev-open", "key leaked")
    assert record.status is DeviceStatus.REVOKED
    assert before.serial in registry.revoked_serials
    assert not registry.accepts_work("dev-open")
    [revoked_cert] = events(core, "certificate.revoked")
    assert revoked_cert.detail == {"serial": before.serial}
    [revoked] = events(core, "device.revoked")
    assert (revoked.actor, revoked.subject) == ("sam", "dev-open")
    assert metric(core, "qtestbed_device_revocations_total", device="dev-open") == 1
    [goodbye] = only(driver.heard(), m.Goodbye)
    assert goodbye.code is m.GoodbyeCode.REVOKED
    again = core.driver()  # the same key and chain can never attest again
    verdict = await again.attest()
    assert not verdict.affirming
    assert any(r.startswith("CERT_REVOKED") for r in verdict.reasons)


async def test_the_export_class_follows_attested_calibration(core: Core) -> None:
    # Band 34-99: controlled at a C-NOT error <= 1e-4; the window lets the claim classify.
    window = CalibrationWindows(two_qubit_error=Tolerance(minimum=1e-5, maximum=0.05))
    await core.register(num_qubits=50, calibration=window)
    exports = core.parts.registries.exports
    assert exports.of("dev-open").export_class == "4A906.a"  # error unknown: conservative
    first_driver = core.driver()
    assert (await first_driver.attest(error=0.01)).affirming
    assert exports.of("dev-open").export_class == "EAR99"
    [first] = events(core, "device.export_class")
    assert (first.detail["from"], first.detail["to"]) == (None, "EAR99")
    crossing = {"device": "dev-open", "from_class": "EAR99", "to_class": "4A906.a"}
    assert metric(core, "qtestbed_export_class_crossings_total", **crossing) == 0
    await first_driver.say(m.Goodbye(reason="recalibrating"))
    assert (await core.driver().attest(error=5e-5)).affirming
    assert exports.of("dev-open").export_class == "4A906.a"
    assert exports.attested_two_qubit_error("dev-open") == 5e-5
    [_, second] = events(core, "device.export_class")
    assert (second.detail["from"], second.detail["to"]) == ("EAR99", "4A906.a")
    assert second.detail["band"] == "34-99"
    assert metric(core, "qtestbed_export_class_crossings_total", **crossing) == 1
    assert (await core.driver().attest(error=6e-5)).affirming  # same band: no new crossing
    assert len(events(core, "device.export_class")) == 2
