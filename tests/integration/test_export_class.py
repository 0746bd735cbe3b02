"""Export class from attested calibration: re-classified at once, audited, crossings counted."""

from __future__ import annotations

import dataclasses

from qtestbed.testing import LocalFacility, eventually
from qtestbed.v1 import admin_pb2
from tests.integration.attester import Attester
from tests.integration.lab import DEVICE, Lab
from tests.integration.support import audit_entries, metric_value, scrape


def _publish_qubits(lab: Lab, num_qubits: int) -> None:
    admin = lab.olivia.admin
    scope = admin_pb2.REFERENCE_SCOPE_DEVICE
    current = lab.olivia.call(
        admin.ListReferenceValues,
        admin_pb2.ListReferenceValuesRequest(scope=scope, scope_id=DEVICE),
    ).versions[0]
    values = admin_pb2.ReferenceValues(
        scope=scope,
        scope_id=DEVICE,
        firmware=current.firmware,
        control_software=current.control_software,
        driver_build=current.driver_build,
        calibration_digest=current.calibration_digest,
        num_qubits=num_qubits,
        # Without a window the claimed error would not be used: it could not lower the class.
        two_qubit_error=admin_pb2.CalibrationWindow(min=1e-5, max=1e-3),
    )
    lab.olivia.call(admin.SetReferenceValues, admin_pb2.SetReferenceValuesRequest(values=values))


def _attest(lab: Lab, error: float) -> Attester:
    measured = dataclasses.replace(lab.measurements, num_qubits=40, two_qubit_error=error)
    attester = lab.attester(measurements=measured)
    verdict = attester.answer(attester.evidence(attester.challenge()))
    assert verdict.affirming, list(verdict.reasons)
    return attester


def test_attested_calibration_classifies_the_device_and_crossings_are_audited(
    facility: LocalFacility,
) -> None:
    lab = Lab(facility)
    try:
        assert lab.device().export_class == "EAR99"  # 5 qubits: in no controlled band
        _publish_qubits(lab, 40)
        # Registered as 40 qubits, error not yet attested: controlled, conservatively.
        assert lab.device().export_class == "4A906.a"
        first = _attest(lab, 5e-5)  # 34-99 qubits at or below 1e-4: controlled
        device = lab.device()
        assert device.export_class == "4A906.a"
        assert "34-99" in device.export_reason
        # Recalibrated: the old connection goes (while it is attested, the device keeps the
        # stricter class of the two) and a new one attests a worse error than the threshold.
        first.close()
        eventually(lambda: not lab.device().connected, timeout=10, what="the old connection")
        _attest(lab, 2e-4)
        assert lab.device().export_class == "EAR99"
        crossings = [e for e in audit_entries(facility) if e.kind == "device.export_class"]
        assert [(e.detail["from"], e.detail["to"]) for e in crossings] == [
            (None, "4A906.a"),
            ("4A906.a", "EAR99"),
        ]
        text = scrape(facility)
        assert (
            metric_value(
                text,
                "qtestbed_export_class_crossings_total",
                device=DEVICE,
                from_class="4A906.a",
                to_class="EAR99",
            )
            == 1
        )
        # The crossing is also an anomaly for the security team: counted and audited.
        anomaly = eventually(
            lambda: [
                e
                for e in audit_entries(facility, kind="anomaly.raised")
                if e.detail["detector"] == "export_class_crossing"
            ],
            what="the export-class crossing anomaly",
        )
        assert [(e.subject, e.detail["from"], e.detail["to"]) for e in anomaly] == [
            (DEVICE, "4A906.a", "EAR99")
        ]
        assert (
            metric_value(
                scrape(facility),
                "qtestbed_anomalies_total",
                detector="export_class_crossing",
                device=DEVICE,
            )
            == 1
        )
    finally:
        lab.close_attesters()
