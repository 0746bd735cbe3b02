"""A job follows the export class of the connection it goes to (issue 12, point 3).

Two connections of one device, on the real driver link of a real broker, attest the same
calibration digest with different two-qubit errors: 2e-4 (above the 34-99 qubit band's 1e-4
threshold: EAR99) and 5e-5 (controlled, 4A906.a). alice is made a foreign national without the
export licence, so only the first connection may run her jobs. Before per-connection classes the
gate read whichever connection classified last, and her job went to the controlled one.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from attestation.dsse import Envelope
from qtestbed.cli.demo import ghz_qasm2
from qtestbed.client import QtestbedError
from qtestbed.testing import LocalFacility
from qtestbed.v1 import access_pb2, admin_pb2
from qtestbed.v1 import driver_link_pb2 as link_pb
from tests.integration.attester import Attester, probe
from tests.integration.lab import DEVICE, Lab
from tests.integration.support import audit_entries, metric_value, scrape, state_name

DENIALS = "qtestbed_clearance_denials_total"
# Generous: each scripted connection heartbeats only while the test waits on it.
TIMING = {"heartbeat_misses": 50}


def _connect(lab: Lab, error: float) -> tuple[Attester, str]:
    """A connection of the 40-qubit device that attested `error`; and its evidence digest."""
    measured = dataclasses.replace(lab.measurements, num_qubits=40, two_qubit_error=error)
    attester = lab.attester(measurements=measured)
    evidence = attester.evidence(attester.challenge())
    assert attester.answer(evidence).affirming
    return attester, Envelope.from_json(evidence).digest()


def _make_alice_foreign(lab: Lab) -> None:
    """alice keeps her tier and training, but export-controlled devices are closed to her."""
    olivia = lab.olivia
    record = olivia.call(olivia.access.GetPrincipal, access_pb2.GetPrincipalRequest(name="alice"))
    record.principal.nationality = "DE"
    del record.principal.jurisdictions[:]
    del record.principal.licences[:]
    request = access_pb2.PutPrincipalRequest(
        principal=record.principal, expected_version=record.meta.version
    )
    olivia.call(olivia.access.PutPrincipal, request)


def _dispatched(facility: LocalFacility) -> list[tuple[str, str]]:
    """(job, evidence digest of the connection it went to) for every dispatch so far."""
    return [
        (e.subject, e.detail["evidence_digest"])
        for e in audit_entries(facility, kind="job.dispatched")
    ]


def test_a_job_follows_the_class_of_the_connection_it_goes_to(tmp_path: Path) -> None:
    with LocalFacility(tmp_path / "facility", timing=TIMING) as facility:
        lab = Lab(facility)
        try:
            window = admin_pb2.CalibrationWindow(min=1e-5, max=1e-3)
            lab.publish_calibration(num_qubits=40, two_qubit_error=window)
            _make_alice_foreign(lab)
            lenient, lenient_digest = _connect(lab, 2e-4)
            assert lab.device().export_class == "EAR99"
            jobs = {lab.queue_job().job_id, lab.queue_job().job_id}  # accepted: EAR99
            grant = lenient.lease()
            [waiting] = jobs - {grant.job_id}

            strict, strict_digest = _connect(lab, 5e-5)
            probe(lab.endpoint)  # the broker is done with the evidence, classification included
            # The device as a whole now takes its strictest connection's class...
            crossings = audit_entries(facility, kind="device.export_class")
            assert [(e.detail["from"], e.detail["to"]) for e in crossings] == [
                (None, "EAR99"),
                ("EAR99", "4A906.a"),
            ]
            with pytest.raises(QtestbedError) as refused:  # ...so alice submits nothing new
                lab.alice.submit(ghz_qasm2(3), device_id=DEVICE, shots=100)
            assert (refused.value.code, refused.value.rule_id) == (
                "PERMISSION_DENIED",
                "export-jurisdiction",
            )
            # ...and her queued job is not given to the idle, attested, controlled connection.
            strict.wait_ticks(3)
            assert state_name(lab.alice.get_job(waiting)) == "QUEUED"
            assert _dispatched(facility) == [(grant.job_id, lenient_digest)]

            # The lenient connection frees up: the waiting job goes there, never to `strict`.
            failure = link_pb.LeaseFailure(
                lease_id=grant.lease_id, job_id=grant.job_id, error="transient", permanent=False
            )
            lenient.send(link_pb.LinkMessage(failure=failure))
            second = lenient.lease()
            strict.wait_ticks(2)
            dispatched = _dispatched(facility)
            assert {digest for _, digest in dispatched} == {lenient_digest}
            assert strict_digest not in {digest for _, digest in dispatched}
            assert second.job_id in jobs

            # Only the controlled connection left: what alice still has queued is denied at
            # dispatch with the rule, counted and audited, and still never leaves.
            marks = lab.marks()
            lenient.close()
            strict.keep_alive_until(
                lambda: all(state_name(lab.alice.get_job(j)) == "DENIED" for j in jobs),
                what="alice's jobs to be denied at dispatch",
            )
            probe(lab.endpoint)
            denied = audit_entries(facility, kind="clearance.denied", after_seq=marks.seq)
            assert {e.subject for e in denied} == jobs
            assert {(e.detail["stage"], e.detail["rule"]) for e in denied} == {
                ("dispatch", "export-jurisdiction")
            }
            labels = {"rule": "export-jurisdiction", "stage": "dispatch"}
            counted = metric_value(scrape(facility), DENIALS, **labels) - metric_value(
                marks.metrics, DENIALS, **labels
            )
            assert counted == 2
            assert strict_digest not in {digest for _, digest in _dispatched(facility)}
        finally:
            lab.close_attesters()
