"""A driver that holds the real device key but lies about a result: the broker's receipt check
catches it, stores nothing, sends the job back, and keeps that connection out."""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Iterator

import pytest
import zmq
from zmq.utils import z85

from attestation.evidence import EvidenceClaims, make_evidence
from attestation.keys import SigningKey, load_private_key
from attestation.receipts import ReceiptClaims, result_digest, sign_receipt
from attestation.shot_memory import ShotMemory
from drivers.config import load_driver_config
from drivers.grants import GrantKey, open_grant
from drivers.measure import measure
from qtestbed.cli.demo import ghz_qasm2
from qtestbed.shared.linkkeys import configure_client, load_keypair
from qtestbed.testing import LocalFacility, eventually
from qtestbed.v1 import driver_link_pb2 as link_pb
from qtestbed.v1 import jobs_pb2
from tests.integration.support import audit_kinds, db_path, metric_value, scrape, state_name


@pytest.fixture
def dealer(facility: LocalFacility) -> Iterator[zmq.Socket[bytes]]:
    facility.start_broker()
    assert facility.addresses is not None
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    # The rogue holds the driver's own link key: CurveZMQ admits it, attestation is next.
    root = facility.root
    configure_client(
        sock, root / "drivers" / "sim-open-link.key_secret", root / "link" / "broker.key"
    )
    sock.connect(facility.addresses.link)
    yield sock
    sock.close()
    ctx.term()


def _exchange(
    sock: zmq.Socket[bytes], message: link_pb.LinkMessage, want: str
) -> link_pb.LinkMessage:
    """Send, then read until a message of kind `want` arrives (answering heartbeats meanwhile)."""
    sock.send(message.SerializeToString())
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if not sock.poll(200):
            sock.send(link_pb.LinkMessage(heartbeat=link_pb.Heartbeat()).SerializeToString())
            continue
        reply = link_pb.LinkMessage()
        reply.ParseFromString(sock.recv())
        if reply.WhichOneof("body") == want:
            return reply
        sock.send(link_pb.LinkMessage(heartbeat=link_pb.Heartbeat()).SerializeToString())
    raise TimeoutError(f"no {want} message from the broker")


def test_tampered_receipt_is_rejected_and_the_job_requeued(
    facility: LocalFacility, dealer: zmq.Socket[bytes]
) -> None:
    alice = facility.client("alice")
    job = alice.submit(ghz_qasm2(3), device_id="sim-open", shots=100).job
    grant, key, evidence_digest = _attest(facility, dealer)  # it holds the device's real key
    assert grant.job_id == job.job_id
    honest = {"000": 100}
    receipt = sign_receipt(
        ReceiptClaims(
            job_id=grant.job_id,
            device_id="sim-open",
            circuit_digest=grant.circuit_digest,
            shots=grant.shots,
            result_digest=result_digest(honest),
            dispatch_nonce=grant.dispatch_nonce,
            evidence_digest=evidence_digest,
            issued_at=time.time(),
        ),
        key,
    )
    lie = link_pb.LeaseResult(
        lease_id=grant.lease_id,
        job_id=grant.job_id,
        counts={"000": 30, "111": 70},
        execution_seconds=0.01,
        receipt=receipt.to_json(),
    )
    dealer.send(link_pb.LinkMessage(result=lie).SerializeToString())

    def rejected() -> bool:
        text = scrape(facility)
        return metric_value(text, "qtestbed_receipt_verifications_total", outcome="rejected") == 1

    eventually(rejected, timeout=30, what="the broker to reject the receipt")

    # The count comes first; the job goes back to the queue in the write that follows it.
    def released() -> jobs_pb2.Job | None:
        current = alice.get_job(job.job_id)
        return current if state_name(current) != "DISPATCHED" else None

    back = eventually(released, timeout=30, what="the job to leave DISPATCHED")
    assert state_name(back) == "QUEUED"
    assert "receipt" in back.reason
    kinds = audit_kinds(facility)
    assert "receipt.rejected" in kinds
    assert "job.completed" not in kinds
    device = next(d for d in alice.devices() if d.device_id == "sim-open")
    assert not device.available


def _attest(
    facility: LocalFacility, dealer: zmq.Socket[bytes]
) -> tuple[link_pb.LeaseGrant, SigningKey, str]:
    """Attest as sim-open with its real key and take the next lease: (grant, key, evidence)."""
    config = load_driver_config(facility.root / "drivers" / "sim-open.toml")
    key = load_private_key(config.device_key)
    grant_key = GrantKey.new()
    hello = link_pb.Hello(
        device_id="sim-open",
        num_qubits=5,
        backend="aer",
        certificate_chain=config.device_certificate.read_bytes(),
        grant_key=grant_key.public,
    )
    challenge = _exchange(dealer, link_pb.LinkMessage(hello=hello), "challenge").challenge
    claims = EvidenceClaims(
        device_id="sim-open",
        nonce=challenge.nonce,
        issued_at=time.time(),
        boot_epoch=uuid.uuid4().hex,
        counter=1,
        measurements=measure(config.device, config.firmware),
    )
    envelope = make_evidence(claims, key)
    evidence = link_pb.LinkMessage(evidence=link_pb.EvidenceMessage(envelope=envelope.to_json()))
    verdict = _exchange(dealer, evidence, "verdict").verdict
    assert verdict.affirming, list(verdict.reasons)
    sealed = _exchange(dealer, link_pb.LinkMessage(heartbeat=link_pb.Heartbeat()), "lease").lease
    link_public, _secret = load_keypair(config.link_secret_key)
    grant = open_grant(sealed, grant_key, link_key=z85.decode(link_public))
    return grant, key, envelope.digest()


def test_memory_other_than_the_receipt_binds_is_rejected(
    facility: LocalFacility, dealer: zmq.Socket[bytes]
) -> None:
    """The device signs one shot order and sends another (same counts): refused, not stored."""
    alice = facility.client("alice")
    job = alice.submit(ghz_qasm2(3), device_id="sim-open", shots=4, memory=True).job
    grant, key, evidence_digest = _attest(facility, dealer)
    assert grant.job_id == job.job_id
    assert grant.memory
    signed = ShotMemory.from_bitstrings(["000", "111", "111", "000"], 3)
    sent = ShotMemory.from_bitstrings(["111", "000", "111", "000"], 3)
    assert sent.histogram() == signed.histogram()
    receipt = sign_receipt(
        ReceiptClaims(
            job_id=grant.job_id,
            device_id="sim-open",
            circuit_digest=grant.circuit_digest,
            shots=grant.shots,
            result_digest=result_digest(signed.histogram()),
            dispatch_nonce=grant.dispatch_nonce,
            evidence_digest=evidence_digest,
            issued_at=time.time(),
            memory_digest=signed.digest(),
        ),
        key,
    )
    lie = link_pb.LeaseResult(
        lease_id=grant.lease_id,
        job_id=grant.job_id,
        counts=sent.histogram(),
        execution_seconds=0.01,
        receipt=receipt.to_json(),
        memory=sent.packed,
        memory_width=3,
    )
    dealer.send(link_pb.LinkMessage(result=lie).SerializeToString())

    def rejected() -> bool:
        text = scrape(facility)
        return metric_value(text, "qtestbed_receipt_verifications_total", outcome="rejected") == 1

    eventually(rejected, timeout=30, what="the broker to reject the receipt")

    def released() -> jobs_pb2.Job | None:
        current = alice.get_job(job.job_id)
        return current if state_name(current) != "DISPATCHED" else None

    back = eventually(released, timeout=30, what="the job to leave DISPATCHED")
    assert state_name(back) == "QUEUED"
    assert "job.completed" not in audit_kinds(facility)
    with sqlite3.connect(db_path(facility)) as conn:
        rows = conn.execute(
            "SELECT detail FROM audit_log WHERE kind = 'receipt.rejected' AND subject = ?",
            (job.job_id,),
        ).fetchall()
    problems = [p for (detail,) in rows for p in json.loads(detail)["problems"]]
    assert "receipt memory digest does not match the per-shot memory" in problems
