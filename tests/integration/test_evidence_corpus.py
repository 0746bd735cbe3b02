"""The bad-evidence corpus, end to end: a scripted Attester sends each kind of wrong evidence
over the real driver link to a real broker, which must refuse it with the right reason codes,
count and audit the refusal, give the device no work, keep serving, and quarantine the device
only when its own registered key provably signed the bad answer to this very challenge.

Cases that leave the device as it was share one facility; cases that quarantine or revoke it,
or need other timing, get their own.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
import secrets
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from attestation.dsse import Envelope
from attestation.keys import KeyKind, SigningKey, load_private_key
from attestation.receipts import RECEIPT_PAYLOAD_TYPE
from qtestbed.cli.demo import ghz_qasm2
from qtestbed.client import QtestbedError
from qtestbed.facility_init import init_facility
from qtestbed.testing import LocalFacility, eventually
from qtestbed.v1 import admin_pb2, devices_pb2
from qtestbed.v1 import driver_link_pb2 as link_pb
from tests.integration.attester import Attester, probe
from tests.integration.lab import DEVICE, Lab, Marks, reason_codes
from tests.integration.support import (
    audit_entries,
    audit_kinds,
    last_audit_seq,
    metric_value,
    scrape,
    state_name,
    wait_state,
)

VERIFICATIONS = "qtestbed_attestation_verifications_total"
QUARANTINES = "qtestbed_device_quarantines_total"
# Short enough that the expired-nonce case waits little, long enough for every prompt answer.
NONCE_TTL = 1.5

Reply = link_pb.AttestationVerdict | link_pb.Goodbye
Exchange = tuple[Attester, Reply]


# ---------------------------------------------------------------------------- the corpus


def _honest(attester: Attester) -> link_pb.AttestationVerdict:
    return attester.answer(attester.evidence(attester.challenge()))


def wrong_key(lab: Lab) -> Exchange:
    attester = lab.attester(key=SigningKey.generate(KeyKind.ED25519))
    return attester, _honest(attester)


def unknown_device(lab: Lab) -> Exchange:
    ghost = SigningKey.generate(KeyKind.ED25519)
    now = dt.datetime.now(dt.UTC)
    chain = lab.certificate("sim-ghost", key=ghost, start=now - dt.timedelta(minutes=5), days=30)
    attester = lab.attester(device_id="sim-ghost", chain=chain, key=ghost)
    return attester, attester.next("goodbye").goodbye


def other_ca(lab: Lab) -> Exchange:
    other = lab.facility.root.parent / "other-facility"
    if not other.exists():
        init_facility(other)
    attester = lab.attester(
        chain=(other / "devices" / f"{DEVICE}.pem").read_bytes(),
        key=load_private_key(other / "devices" / f"{DEVICE}.key"),
    )
    return attester, _honest(attester)


def _own_ca_certificate(lab: Lab, start: dt.datetime, days: int) -> Exchange:
    chain = lab.certificate(DEVICE, key=lab.device_key, start=start, days=days)
    attester = lab.attester(chain=chain)
    return attester, _honest(attester)


def expired_certificate(lab: Lab) -> Exchange:
    start = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    return _own_ca_certificate(lab, start, days=1)


def future_certificate(lab: Lab) -> Exchange:
    start = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    return _own_ca_certificate(lab, start, days=30)


def revoked_certificate(lab: Lab) -> Exchange:
    assert lab.revoke().status == admin_pb2.DEVICE_STATUS_REVOKED
    attester = lab.attester()
    return attester, _honest(attester)


def replayed_nonce(lab: Lab) -> Exchange:
    """The same answer again, on the same connection, to the broker's next challenge (Evidence
    answering no challenge is not appraised at all: see test_evidence_flood)."""
    attester = lab.attester()
    recorded = attester.evidence(attester.challenge())
    assert attester.answer(recorded).affirming
    # The short attestation TTL makes the broker re-challenge this same connection; once the
    # first result has lapsed the connection gets no work, so the job can queue safely.
    attester.challenge()
    attester.keep_alive_until(
        lambda: not lab.device().available, what="the first attestation result to lapse"
    )
    lab.queue_job()
    return attester, attester.answer(recorded)


def replayed_on_a_new_connection(lab: Lab) -> Exchange:
    """Evidence recorded on a connection that has gone, replayed on a new one: its nonce was
    never issued to the new connection."""
    first = lab.attester()
    recorded = first.evidence(first.challenge())
    assert first.answer(recorded).affirming
    first.close()
    eventually(lambda: not lab.device().connected, timeout=10, what="the first connection to go")
    lab.queue_job()  # only now: the affirmed connection would have run it
    second = lab.attester()
    second.challenge()
    return second, second.answer(recorded)


def other_connections_nonce(lab: Lab) -> Exchange:
    """A second connection answers the first one's challenge: that nonce is not its own."""
    first = lab.attester()
    nonce = first.challenge()
    second = lab.attester()
    second.challenge()
    return second, second.answer(second.evidence(nonce))


def unknown_nonce(lab: Lab) -> Exchange:
    attester = lab.attester()
    attester.challenge()
    return attester, attester.answer(attester.evidence(secrets.token_bytes(32)))


def expired_nonce(lab: Lab) -> Exchange:
    attester = lab.attester()
    nonce = attester.challenge()
    attester.keep_alive(NONCE_TTL + 0.1)  # bounded by the TTL: forgotten after two of them
    return attester, attester.answer(attester.evidence(nonce))


def stale_evidence(lab: Lab) -> Exchange:
    attester = lab.attester()
    hour_ago = time.time() - 3600
    return attester, attester.answer(attester.evidence(attester.challenge(), issued_at=hour_ago))


def counter_rollback(lab: Lab) -> Exchange:
    attester = lab.attester()
    assert attester.answer(attester.evidence(attester.challenge(), counter=5)).affirming
    # The short attestation TTL makes the broker re-challenge this same connection; once the
    # first result has lapsed the connection gets no work, so the job can queue safely.
    nonce = attester.challenge()
    attester.keep_alive_until(
        lambda: not lab.device().available, what="the first attestation result to lapse"
    )
    lab.queue_job()
    return attester, attester.answer(attester.evidence(nonce, counter=3))


def _signed(lab: Lab) -> tuple[Attester, Envelope]:
    attester = lab.attester()
    return attester, attester.sign(attester.claims(attester.challenge()))


def tampered_payload(lab: Lab) -> Exchange:
    attester, envelope = _signed(lab)
    payload = bytearray(envelope.payload)
    payload[envelope.payload.index(attester.boot_epoch.encode())] ^= 0x01  # still valid JSON
    tampered = dataclasses.replace(envelope, payload=bytes(payload))
    return attester, attester.answer(tampered.to_json())


def tampered_signature(lab: Lab) -> Exchange:
    attester, envelope = _signed(lab)
    signature = envelope.signatures[0]
    flipped = bytearray(signature.sig)
    flipped[10] ^= 0x01
    tampered = dataclasses.replace(
        envelope, signatures=(dataclasses.replace(signature, sig=bytes(flipped)),)
    )
    return attester, attester.answer(tampered.to_json())


def wrong_payload_type(lab: Lab) -> Exchange:
    # Signed by the device, but as a result receipt: a statement of another kind.
    attester = lab.attester()
    claims = attester.claims(attester.challenge())
    envelope = attester.sign(claims, payload_type=RECEIPT_PAYLOAD_TYPE)
    return attester, attester.answer(envelope.to_json())


def truncated_envelope(lab: Lab) -> Exchange:
    attester = lab.attester()
    whole = attester.evidence(attester.challenge())
    return attester, attester.answer(whole[: len(whole) // 2])


def random_bytes(lab: Lab) -> Exchange:
    attester = lab.attester()
    attester.challenge()
    return attester, attester.answer(random.Random(9334).randbytes(512))


def patched_firmware(lab: Lab) -> Exchange:
    attester = lab.attester()
    patched = dataclasses.replace(lab.measurements, firmware="patched 6.6.6")
    return attester, attester.answer(attester.evidence(attester.challenge(), measurements=patched))


def calibration_out_of_window(lab: Lab) -> Exchange:
    # The right calibration digest, but a two-qubit error far outside the operator's window:
    # the claim that would decide the export class is itself a reference value now.
    window = admin_pb2.CalibrationWindow(min=1e-5, max=1e-3)
    assert lab.publish_calibration(two_qubit_error=window) == 2
    attester = lab.attester()
    absurd = dataclasses.replace(lab.measurements, two_qubit_error=0.5)
    return attester, attester.answer(attester.evidence(attester.challenge(), measurements=absurd))


def expired_reference(lab: Lab) -> Exchange:
    now = time.time()
    assert lab.publish_reference(not_before=now - 7200, not_after=now - 3600) == 2
    attester = lab.attester()
    return attester, _honest(attester)


@dataclass(frozen=True, kw_only=True, slots=True)
class Case:
    id: str
    codes: tuple[str, ...]  # every reason code of the verdict, in the broker's order
    run: Callable[[Lab], Exchange]
    queues_job: bool = False  # the case queues its job itself, once no connection could run it
    status: str = "ACTIVE"  # the device's status afterwards
    timing: Mapping[str, float] = dataclasses.field(default_factory=dict)


IMPOSTOR = ("SIGNATURE_INVALID",)
SHARED_CASES = [
    Case(id="wrong-key", codes=IMPOSTOR, run=wrong_key),
    Case(id="unknown-device", codes=("UNKNOWN_DEVICE",), run=unknown_device),
    Case(id="other-ca", codes=("CERT_UNTRUSTED", *IMPOSTOR), run=other_ca),
    Case(id="expired-certificate", codes=("CERT_EXPIRED", *IMPOSTOR), run=expired_certificate),
    Case(id="future-certificate", codes=("CERT_NOT_YET_VALID", *IMPOSTOR), run=future_certificate),
    Case(
        id="replayed-on-a-new-connection",
        codes=("NONCE_UNKNOWN",),
        run=replayed_on_a_new_connection,
        queues_job=True,
    ),
    Case(id="unknown-nonce", codes=("NONCE_UNKNOWN",), run=unknown_nonce),
    Case(id="other-connections-nonce", codes=("NONCE_UNKNOWN",), run=other_connections_nonce),
    Case(id="expired-nonce", codes=("NONCE_EXPIRED",), run=expired_nonce),
    Case(id="tampered-payload", codes=IMPOSTOR, run=tampered_payload),
    Case(id="tampered-signature", codes=IMPOSTOR, run=tampered_signature),
    Case(id="wrong-payload-type", codes=("PAYLOAD_TYPE_WRONG",), run=wrong_payload_type),
    Case(id="truncated-envelope", codes=("MALFORMED_EVIDENCE",), run=truncated_envelope),
    Case(id="random-bytes", codes=("MALFORMED_EVIDENCE",), run=random_bytes),
]
OWN_FACILITY_CASES = [
    # The same answer again on its connection: its counter has not moved on either.
    Case(
        id="replayed-nonce",
        codes=("NONCE_REPLAYED", "COUNTER_REGRESSED"),
        run=replayed_nonce,
        queues_job=True,
        timing={"attestation_ttl_seconds": 2.0},
    ),
    # Revoked: no key is registered for the device any more, hence UNKNOWN_DEVICE too.
    Case(
        id="revoked-certificate",
        codes=("CERT_REVOKED", "UNKNOWN_DEVICE", *IMPOSTOR),
        run=revoked_certificate,
        status="REVOKED",
    ),
    Case(id="stale-evidence", codes=("EVIDENCE_STALE",), run=stale_evidence, status="QUARANTINED"),
    Case(
        id="counter-rollback",
        codes=("COUNTER_REGRESSED",),
        run=counter_rollback,
        queues_job=True,
        status="QUARANTINED",
        timing={"attestation_ttl_seconds": 2.0},
    ),
    Case(
        id="patched-firmware",
        codes=("MEASUREMENT_FIRMWARE",),
        run=patched_firmware,
        status="QUARANTINED",
    ),
    Case(
        id="calibration-out-of-window",
        codes=("CALIBRATION_OUT_OF_RANGE",),
        run=calibration_out_of_window,
        status="QUARANTINED",
    ),
    Case(
        id="expired-reference",
        codes=("REFERENCE_EXPIRED",),
        run=expired_reference,
        status="QUARANTINED",
    ),
]


# ---------------------------------------------------------------------------- the checks


def play(lab: Lab, case: Case) -> tuple[Marks, Attester, Reply]:
    marks = lab.marks()
    if not case.queues_job:
        lab.queue_job()  # before the attester connects
    attester, reply = case.run(lab)
    assert lab.job is not None, "the case queued no job"
    return marks, attester, reply


def check_refused(lab: Lab, case: Case, marks: Marks, attester: Attester, reply: Reply) -> None:
    """The reply, the metric, the audit entry; the job stays queued and the broker serves."""
    if isinstance(reply, link_pb.Goodbye):
        assert case.codes == ("UNKNOWN_DEVICE",)
        assert "not registered" in reply.reason
        labelled, subject = "unregistered", attester.device_id
    else:
        assert not reply.affirming
        assert reason_codes(reply.reasons) == list(case.codes), list(reply.reasons)
        assert reply.valid_for_seconds == 0
        labelled, subject = DEVICE, DEVICE
    probe(lab.endpoint)  # the broker has finished with the evidence, quarantine included
    after = scrape(lab.facility)

    def counted(**labels: str) -> float:
        return metric_value(after, VERIFICATIONS, **labels) - metric_value(
            marks.metrics, VERIFICATIONS, **labels
        )

    assert counted(device=labelled, outcome="contraindicated", reason=case.codes[0]) == 1
    assert counted(device=labelled, outcome="contraindicated") == 1
    failed = audit_entries(lab.facility, kind="attestation.failed", after_seq=marks.seq)
    if isinstance(reply, link_pb.Goodbye):
        # A Hello for an unregistered device is a link refusal, audited in aggregate.
        refusals = "qtestbed_link_refusals_total"
        assert (
            metric_value(after, refusals, reason="unknown_device")
            - metric_value(marks.metrics, refusals, reason="unknown_device")
            == 1
        )
        assert failed == []
    else:
        assert [(e.subject, reason_codes(e.detail["reasons"])) for e in failed] == [
            (subject, list(case.codes))
        ]
    if not isinstance(reply, link_pb.Goodbye):
        attester.wait_ticks(2)  # the dispatcher has looked at the device's queue since
    assert lab.job is not None
    job = lab.alice.get_job(lab.job.job_id)
    assert state_name(job) == "QUEUED"
    assert job.attempts == 0
    assert job.waiting_for
    assert "job.dispatched" not in audit_kinds(lab.facility)
    device = lab.device()
    assert not device.available
    assert device.status == case.status
    if not isinstance(reply, link_pb.Goodbye):
        assert device.attestation_status == devices_pb2.ATTESTATION_STATUS_CONTRAINDICATED
        assert reason_codes(device.attestation_reasons) == list(case.codes)


def check_quarantine(lab: Lab, case: Case, marks: Marks) -> None:
    """Quarantined exactly when the case says so, with the code as the reason."""
    registered = lab.registered()
    quarantined = audit_entries(lab.facility, kind="device.quarantined", after_seq=marks.seq)
    count = metric_value(scrape(lab.facility), QUARANTINES, device=DEVICE) - metric_value(
        marks.metrics, QUARANTINES, device=DEVICE
    )
    assert registered.status == admin_pb2.DeviceStatus.Value(f"DEVICE_STATUS_{case.status}")
    if case.status != "QUARANTINED":
        assert quarantined == []
        assert count == 0
        return
    assert case.codes[0] in registered.status_reason
    assert [(e.subject, e.detail["from"]) for e in quarantined] == [(DEVICE, "ACTIVE")]
    assert case.codes[0] in quarantined[0].detail["reason"]
    assert count == 1
    assert lab.job is not None
    assert "quarantined" in lab.alice.get_job(lab.job.job_id).waiting_for


@pytest.fixture(scope="module")
def shared_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    root = tmp_path_factory.mktemp("corpus") / "facility"
    with LocalFacility(root, timing={"nonce_ttl_seconds": NONCE_TTL}) as facility:
        yield Lab(facility)


@pytest.fixture
def lab(shared_lab: Lab) -> Iterator[Lab]:
    yield shared_lab
    shared_lab.reset()


@pytest.mark.parametrize("case", SHARED_CASES, ids=lambda c: c.id)
def test_bad_evidence_is_refused_and_the_device_left_active(lab: Lab, case: Case) -> None:
    marks, attester, reply = play(lab, case)
    check_refused(lab, case, marks, attester, reply)
    check_quarantine(lab, case, marks)


@pytest.mark.parametrize("case", OWN_FACILITY_CASES, ids=lambda c: c.id)
def test_bad_evidence_signed_by_the_device_itself(tmp_path: Path, case: Case) -> None:
    with LocalFacility(tmp_path / "facility", timing=case.timing) as facility:
        lab = Lab(facility)
        try:
            marks, attester, reply = play(lab, case)
            check_refused(lab, case, marks, attester, reply)
            check_quarantine(lab, case, marks)
        finally:
            lab.close_attesters()


# ---------------------------------------------------------------------------- operator actions


def test_quarantine_holds_until_released_after_a_passing_attestation(
    facility: LocalFacility,
) -> None:
    lab = Lab(facility)
    try:
        first = lab.queue_job()
        bad = lab.attester()
        patched = dataclasses.replace(lab.measurements, firmware="patched 6.6.6")
        verdict = bad.answer(bad.evidence(bad.challenge(), measurements=patched))
        assert reason_codes(verdict.reasons) == ["MEASUREMENT_FIRMWARE"]
        probe(lab.endpoint)
        assert lab.registered().status == admin_pb2.DEVICE_STATUS_QUARANTINED
        quarantined_at = audit_entries(facility, kind="device.quarantined")[-1].seq

        with pytest.raises(QtestbedError) as refused:
            lab.release()
        assert refused.value.code == "FAILED_PRECONDITION"
        assert "has not passed an attestation" in refused.value.message
        assert lab.registered().status == admin_pb2.DEVICE_STATUS_QUARANTINED

        # The genuine driver attests and passes; the rejected connection stays, to count ticks.
        facility.start_driver(DEVICE)
        bad.keep_alive_until(
            lambda: audit_entries(facility, kind="attestation.passed", after_seq=quarantined_at),
            timeout=60,
            what="the genuine driver to pass attestation",
        )
        second = lab.queue_job()
        bad.wait_ticks(2)
        for job in (first, second):
            seen = lab.alice.get_job(job.job_id)
            assert state_name(seen) == "QUEUED"
            assert "quarantined" in seen.waiting_for
        assert "job.dispatched" not in audit_kinds(facility)
        assert lab.registered().status == admin_pb2.DEVICE_STATUS_QUARANTINED
        assert not lab.device().available

        released_at = last_audit_seq(facility)
        assert lab.release().status == admin_pb2.DEVICE_STATUS_ACTIVE
        for job in (first, second):
            done = wait_state(lab.alice, job.job_id, "COMPLETED", "FAILED")
            assert state_name(done) == "COMPLETED", done.reason
        kinds = [e.kind for e in audit_entries(facility, after_seq=released_at)]
        assert kinds.count("job.dispatched") == 2
        assert kinds.index("device.released") < kinds.index("job.dispatched")
    finally:
        lab.close_attesters()


def test_revocation_stops_dispatch_to_a_busy_device_at_once(facility: LocalFacility) -> None:
    facility.start_broker()
    facility.start_driver(DEVICE, extra_config="min_execution_seconds = 3.0")
    alice, olivia = facility.client("alice"), facility.client("olivia")
    facility.wait_available(alice, DEVICE)
    running = alice.submit(ghz_qasm2(3), device_id=DEVICE, shots=100).job
    wait_state(alice, running.job_id, "RUNNING")
    queued = [alice.submit(ghz_qasm2(3), device_id=DEVICE, shots=100).job for _ in range(2)]
    assert [state_name(alice.get_job(j.job_id)) for j in queued] == ["QUEUED", "QUEUED"]

    request = admin_pb2.RevokeDeviceRequest(device_id=DEVICE, reason="key compromised")
    revoked = olivia.call(olivia.admin.RevokeDevice, request)
    assert revoked.status == admin_pb2.DEVICE_STATUS_REVOKED
    revocation = audit_entries(facility, kind="certificate.revoked")[0].seq

    # Told goodbye, the driver drops its connection (and the running job's lease with it),
    # reconnects, and is refused: its certificate is revoked.
    wait_state(alice, running.job_id, "QUEUED")

    def refused_again() -> bool:
        failed = audit_entries(facility, kind="attestation.failed", after_seq=revocation)
        return any("CERT_REVOKED" in reason_codes(e.detail["reasons"]) for e in failed)

    eventually(refused_again, timeout=30, what="the reconnected driver to be refused")
    after = [e.kind for e in audit_entries(facility, after_seq=revocation)]
    assert "job.dispatched" not in after
    assert "job.completed" not in after
    for job in (running, *queued):
        seen = alice.get_job(job.job_id)
        assert state_name(seen) == "QUEUED"
        assert "revoked" in seen.waiting_for
    device = next(d for d in alice.devices() if d.device_id == DEVICE)
    assert device.status == "REVOKED"
    assert not device.available
    with pytest.raises(QtestbedError) as refused:
        alice.submit(ghz_qasm2(3), device_id=DEVICE, shots=100)
    assert refused.value.code == "NOT_FOUND"
