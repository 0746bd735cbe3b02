"""The attestor (broker/link/attestor.py): who is challenged, what affirms, what quarantines,
what is merely refused, how results are kept current, and how revocation reaches drivers."""

from __future__ import annotations

import dataclasses

from attestation.keys import KeyKind, SigningKey
from attestation.sealing import new_keypair
from broker.devices.model import DeviceStatus
from broker.link import messages as m
from broker.link.fake import make_peer
from broker.link.fleet import LinkState
from tests.unit.core.harness import (
    Core,
    attested,
    audit_mark,
    audit_since,
    connection,
    events,
    metric,
    only,
    queued,
)


def _verifications(core: Core, device: str, outcome: str, reason: str) -> float:
    labels = {"device": device, "outcome": outcome, "reason": reason}
    return metric(core, "qtestbed_attestation_verifications_total", **labels)


async def test_hello_for_an_unregistered_device_gets_goodbye_unknown_device(core: Core) -> None:
    identity, _ = make_peer("ghost")
    hello = m.Hello(
        device_id="ghost",
        num_qubits=5,
        basis_gates=("cx",),
        coupling_map=(),
        backend="fake",
        driver_build="drv-1",
        certificate_chain=b"",
        grant_key=new_keypair()[1],
    )
    burst = core.parts.base.settings.timing.hello_burst
    for _ in range(burst):
        await core.parts.link.hub.route(identity, hello)
        [goodbye] = core.link.take(identity)
        assert isinstance(goodbye, m.Goodbye)
        assert goodbye.code is m.GoodbyeCode.UNKNOWN_DEVICE
    assert core.parts.jobs.fleet.get(identity) is None
    assert _verifications(core, "unregistered", "contraindicated", "UNKNOWN_DEVICE") == burst
    assert metric(core, "qtestbed_link_refusals_total", reason="unknown_device") == burst
    # Audited in aggregate, like every link refusal: one entry with the count, not one a Hello.
    assert events(core, "attestation.failed") == []
    assert events(core, "link.refused") == []
    await core.parts.link.door.flush(force=True)
    [refused] = events(core, "link.refused")
    assert refused.subject == "ghost"
    assert refused.detail["reason"] == "unknown_device"
    assert refused.detail["count"] == burst


async def test_good_evidence_affirms_and_the_verdict_says_so(core: Core) -> None:
    await core.register()
    driver = core.driver()
    await driver.hello()
    [challenge] = only(driver.heard(), m.Challenge)
    assert len(challenge.nonce) == 32
    assert connection(driver).state is LinkState.CHALLENGED
    await driver.say(m.Evidence(envelope=driver.evidence(challenge.nonce)))
    [verdict] = only(driver.heard(), m.Verdict)
    ttl = core.parts.base.settings.timing.attestation_ttl_seconds
    assert verdict == m.Verdict(affirming=True, reasons=(), valid_for_seconds=ttl)
    conn = connection(driver)
    assert conn.state is LinkState.ATTESTED
    assert conn.dispatchable(core.clock.now())
    [passed] = events(core, "attestation.passed")
    assert passed.subject == "dev-open"
    assert passed.detail["status"] == "affirming"
    assert _verifications(core, "dev-open", "affirming", "OK") == 1


async def test_a_wrong_measurement_is_refused_and_quarantines_the_device(core: Core) -> None:
    await core.register()
    driver = core.driver()
    verdict = await driver.attest(firmware="fw-unknown")
    assert not verdict.affirming
    assert any(r.startswith("MEASUREMENT_FIRMWARE") for r in verdict.reasons)
    assert connection(driver).state is LinkState.REJECTED
    record = core.parts.registries.devices.get("dev-open")
    assert record is not None
    assert record.status is DeviceStatus.QUARANTINED
    assert "MEASUREMENT_FIRMWARE" in record.status_reason
    [quarantined] = events(core, "device.quarantined")
    assert (quarantined.actor, quarantined.subject) == ("broker", "dev-open")
    assert len(events(core, "attestation.failed")) == 1
    assert metric(core, "qtestbed_device_quarantines_total", device="dev-open") == 1
    reason = "MEASUREMENT_FIRMWARE"
    assert _verifications(core, "dev-open", "contraindicated", reason) == 1


async def test_evidence_signed_with_another_key_is_refused_without_quarantine(
    core: Core,
) -> None:
    await core.register()
    driver = core.driver()
    driver.kit = dataclasses.replace(driver.kit, key=SigningKey.generate(KeyKind.ED25519))
    verdict = await driver.attest()
    assert not verdict.affirming
    assert any(r.startswith("SIGNATURE_INVALID") for r in verdict.reasons)
    assert connection(driver).state is LinkState.REJECTED
    record = core.parts.registries.devices.get("dev-open")
    assert record is not None
    assert record.status is DeviceStatus.ACTIVE
    assert events(core, "device.quarantined") == []
    assert metric(core, "qtestbed_device_quarantines_total", device="dev-open") == 0
    assert len(events(core, "attestation.failed")) == 1


async def test_a_replayed_nonce_is_refused(core: Core) -> None:
    await core.register()
    first = core.driver()
    await first.hello()
    [challenge] = only(first.heard(), m.Challenge)
    envelope = first.evidence(challenge.nonce)
    await first.say(m.Evidence(envelope=envelope))
    assert only(first.heard(), m.Verdict)[0].affirming
    await core.parts.link.attestor.challenge(connection(first))  # a new challenge is out
    only(first.heard(), m.Challenge)
    await first.say(m.Evidence(envelope=envelope))  # answered with the old answer
    [verdict] = only(first.heard(), m.Verdict)
    assert not verdict.affirming
    assert any(r.startswith("NONCE_REPLAYED") for r in verdict.reasons)
    assert connection(first).state is LinkState.REJECTED
    assert metric(core, "qtestbed_nonce_replays_total", device="dev-open") == 1
    record = core.parts.registries.devices.get("dev-open")
    assert record is not None
    assert record.status is DeviceStatus.ACTIVE  # not attributable: no quarantine


async def test_evidence_nobody_asked_for_is_refused_unappraised_and_unstored(core: Core) -> None:
    driver = await attested(core)
    mark = audit_mark(core)
    history = len(await core.parts.registries.devices.history("dev-open", 1000))
    # Before any challenge is out: the answer already given, and fresh evidence on any nonce.
    stale = driver.evidence(b"\x00" * 32)
    for _ in range(50):
        await driver.say(m.Evidence(envelope=stale))
    assert only(driver.heard(), m.Verdict) == []  # nothing appraised, nothing answered
    assert connection(driver).state is LinkState.ATTESTED
    assert len(await core.parts.registries.devices.history("dev-open", 1000)) == history
    assert metric(core, "qtestbed_link_refusals_total", reason="unsolicited_evidence") == 50
    assert audit_since(core, mark) == []  # audited in aggregate, when the window closes
    await core.parts.link.door.flush(force=True)
    [refused] = [e for e in audit_since(core, mark) if e.kind == "link.refused"]
    assert refused.subject == "dev-open"
    assert refused.detail["reason"] == "unsolicited_evidence"
    assert refused.detail["count"] == 50


async def test_a_challenge_is_answered_once_and_only_before_it_lapses(core: Core) -> None:
    await core.register()
    driver = core.driver()
    await driver.hello()
    [challenge] = only(driver.heard(), m.Challenge)
    core.clock.advance(core.parts.base.settings.timing.nonce_ttl_seconds + 1)
    await driver.say(m.Evidence(envelope=driver.evidence(challenge.nonce)))
    assert only(driver.heard(), m.Verdict) == []  # lapsed: no longer outstanding
    assert metric(core, "qtestbed_link_refusals_total", reason="unsolicited_evidence") == 1
    await core.parts.link.attestor.maintain(core.clock.now())  # re-challenged
    [again] = only(driver.heard(), m.Challenge)
    await driver.say(m.Evidence(envelope=driver.evidence(again.nonce)))
    assert only(driver.heard(), m.Verdict)[0].affirming
    await driver.say(m.Evidence(envelope=driver.evidence(again.nonce)))  # a second answer
    assert only(driver.heard(), m.Verdict) == []
    assert metric(core, "qtestbed_link_refusals_total", reason="unsolicited_evidence") == 2


async def test_a_challenge_is_answered_only_on_the_connection_it_was_sent_to(core: Core) -> None:
    await core.register()
    first, second = core.driver(), core.driver()
    await first.hello()
    [challenge] = only(first.heard(), m.Challenge)
    await second.hello()
    only(second.heard(), m.Challenge)
    # The second connection answers the first one's challenge: that nonce is not its own.
    await second.say(m.Evidence(envelope=second.evidence(challenge.nonce)))
    [refused] = only(second.heard(), m.Verdict)
    assert not refused.affirming
    assert any(r.startswith("NONCE_UNKNOWN") for r in refused.reasons)
    assert connection(second).state is LinkState.REJECTED
    # ...and the first connection's own answer still works: nothing of it was used up.
    await first.say(m.Evidence(envelope=first.evidence(challenge.nonce)))
    [verdict] = only(first.heard(), m.Verdict)
    assert verdict.affirming, verdict.reasons
    assert connection(first).state is LinkState.ATTESTED


async def test_results_are_re_challenged_before_they_expire(core: Core) -> None:
    driver = await attested(core)
    attestor = core.parts.link.attestor
    ttl = core.parts.base.settings.timing.attestation_ttl_seconds
    first = connection(driver).attestation
    assert first is not None
    core.clock.advance(ttl * 0.7)
    await attestor.maintain(core.clock.now())
    assert only(driver.heard(), m.Challenge) == []  # plenty of life left
    core.clock.advance(ttl * 0.1)
    await attestor.maintain(core.clock.now())
    [challenge] = only(driver.heard(), m.Challenge)
    assert connection(driver).dispatchable(core.clock.now())  # still attested meanwhile
    await driver.say(m.Evidence(envelope=driver.evidence(challenge.nonce)))
    [verdict] = only(driver.heard(), m.Verdict)
    assert verdict.affirming
    renewed = connection(driver).attestation
    assert renewed is not None
    assert renewed.expires_at == core.clock.now() + ttl > first.expires_at
    assert len(events(core, "attestation.passed")) == 2


async def test_an_unanswered_re_challenge_lets_the_result_lapse(core: Core) -> None:
    driver = await attested(core)
    ttl = core.parts.base.settings.timing.attestation_ttl_seconds
    core.clock.advance(ttl * 0.8)
    await core.parts.link.attestor.maintain(core.clock.now())
    assert only(driver.heard(), m.Challenge)
    core.clock.advance(ttl * 0.2)
    assert not connection(driver).dispatchable(core.clock.now())
    assert not core.parts.jobs.fleet.attested("dev-open", core.clock.now())
    await queued(core)
    await core.pump()
    assert driver.grants() == []


async def test_drop_device_sends_goodbye_revoked_to_every_connection(core: Core) -> None:
    first = await attested(core)
    second = core.driver()
    assert (await second.attest()).affirming
    await core.parts.link.attestor.drop_device("dev-open", "certificate revoked")
    for driver in (first, second):
        [goodbye] = only(driver.heard(), m.Goodbye)
        assert goodbye.code is m.GoodbyeCode.REVOKED
        assert connection(driver).state is LinkState.REJECTED
        assert not connection(driver).dispatchable(core.clock.now())
