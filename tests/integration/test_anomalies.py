"""Each anomaly injected into a real broker with real drivers and links: the metric and the
`anomaly.raised` audit entry appear; a normal workload raises none."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from attestation.keys import KeyKind, SigningKey
from qtestbed.cli.demo import ghz_qasm2
from qtestbed.client import QtestbedError, submit_request
from qtestbed.testing import LocalFacility, eventually
from qtestbed.v1 import admin_pb2
from tests.integration.lab import DEVICE, Lab
from tests.integration.support import (
    AuditRow,
    audit_entries,
    metric_value,
    scrape,
    wait_state,
)

# Small thresholds so a test injects an anomaly in seconds; the methods are the shipped ones.
SENSITIVE = {
    "rate_floor": 6,
    "volume_floor": 150,
    "denial_threshold": 4,
    "attestation_device_threshold": 2,
    "attestation_facility_threshold": 3,
}


def _anomalies(facility: LocalFacility, detector: str) -> list[AuditRow]:
    return [
        e
        for e in audit_entries(facility, kind="anomaly.raised")
        if e.detail["detector"] == detector
    ]


def _counted(facility: LocalFacility, detector: str, device: str = "") -> float:
    return metric_value(
        scrape(facility), "qtestbed_anomalies_total", detector=detector, device=device
    )


def _canaries(metrics: str, device: str, outcome: str | None = None) -> float:
    """Canary circuits the broker ran on `device` (of one outcome, if given)."""
    labels = {"device": device} if outcome is None else {"device": device, "outcome": outcome}
    return metric_value(metrics, "qtestbed_canary_runs_total", **labels)


def _raised(facility: LocalFacility, detector: str) -> AuditRow:
    found = eventually(
        lambda: _anomalies(facility, detector), what=f"an anomaly.raised entry from {detector}"
    )
    return found[0]


@pytest.fixture
def sensitive(tmp_path: Path) -> Iterator[LocalFacility]:
    with LocalFacility(tmp_path / "facility", anomaly=SENSITIVE) as fac:
        yield fac


def test_a_submission_spike_is_raised_once(sensitive: LocalFacility) -> None:
    sensitive.start_broker()
    alice = sensitive.client("alice")
    for _ in range(10):
        alice.submit(ghz_qasm2(2), device_id="sim-open", shots=10)
    finding = _raised(sensitive, "submission_rate_spike")
    assert finding.subject == "alice"
    assert finding.detail["count"] == 7  # the first submission above the floor of 6
    assert _counted(sensitive, "submission_rate_spike") == 1


def _sweep(points: int) -> list[bytes]:
    """A parameter sweep: the same circuit at `points` rotation angles."""
    return [
        f'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[1];\ncreg c[1];\n'
        f"rx({3.14159 * n / points:.6f}) q[0];\nmeasure q[0] -> c[0];\n".encode()
        for n in range(points)
    ]


def test_a_sweep_by_a_new_principal_is_quiet_and_a_flood_of_single_calls_is_not(
    tmp_path: Path,
) -> None:
    """Issue 14: a 100-point sweep sent as one SubmitJobs call by a principal without history
    fired submission_rate_spike. The shipped thresholds, with the window widened to an hour so
    that the flood's calls fall in one window however slowly this machine answers."""
    with LocalFacility(tmp_path / "facility", anomaly={"rate_window_seconds": 3600.0}) as facility:
        facility.start_broker()
        bob = facility.client("bob")
        sweep = [submit_request(p, device_id="sim-open", shots=100) for p in _sweep(100)]
        queued = bob.submit_many(sweep)
        assert len(queued) == 100
        assert all(r.created for r in queued)
        # A finding is counted inside the call that caused it: none was.
        assert metric_value(scrape(facility), "qtestbed_anomalies_total") == 0
        # Alice, as new as bob, sends the rate floor plus one separate SubmitJob calls.
        alice = facility.client("alice")
        for _ in range(61):
            alice.submit(ghz_qasm2(2), device_id="sim-open", shots=10)
        finding = _raised(facility, "submission_rate_spike")
        assert finding.subject == "alice"
        assert finding.detail["count"] == 61
        assert finding.detail["baseline"] == "facility prior"
        assert _counted(facility, "submission_rate_spike") == 1
        # Audited in order: bob's sweep, submitted first, left no entry before alice's.
        raised = audit_entries(facility, kind="anomaly.raised")
        assert [(e.subject, e.detail["detector"]) for e in raised] == [
            ("alice", "submission_rate_spike")
        ]


def test_full_batches_back_to_back_are_a_volume_spike(sensitive: LocalFacility) -> None:
    sensitive.start_broker()
    alice = sensitive.client("alice")
    for _ in range(2):  # 200 jobs in two calls: above the volume floor of 150, not the rate's 6
        alice.submit_many([submit_request(p, device_id="sim-open", shots=10) for p in _sweep(100)])
    finding = _raised(sensitive, "submission_volume_spike")
    assert finding.subject == "alice"
    assert finding.detail["count"] == 200
    assert finding.detail["unit"] == "jobs"
    assert _counted(sensitive, "submission_volume_spike") == 1
    assert _counted(sensitive, "submission_rate_spike") == 0


def test_probing_for_hidden_devices_is_a_denial_burst(sensitive: LocalFacility) -> None:
    sensitive.start_broker()
    alice = sensitive.client("alice")
    for name in ("sim-restricted", "qpu-1", "qpu-2", "sim-restricted"):
        with pytest.raises(QtestbedError):
            alice.device(name)
    finding = _raised(sensitive, "denial_burst")
    assert finding.subject == "alice"
    assert _counted(sensitive, "denial_burst") == 1
    assert _anomalies(sensitive, "submission_rate_spike") == []


def test_attestation_failure_bursts_per_device_and_across_the_facility(
    sensitive: LocalFacility,
) -> None:
    lab = Lab(sensitive)
    try:
        for _ in range(3):  # someone without the device key keeps trying to be sim-open
            attester = lab.attester(key=SigningKey.generate(KeyKind.ED25519))
            assert not attester.answer(attester.evidence(attester.challenge())).affirming
        device = _raised(sensitive, "attestation_failure_burst")
        assert device.subject == DEVICE
        assert device.detail["device"] == DEVICE
        facility_wide = _raised(sensitive, "attestation_failure_burst_facility")
        assert facility_wide.subject == "facility"
        assert _counted(sensitive, "attestation_failure_burst", DEVICE) == 1
        assert _counted(sensitive, "attestation_failure_burst_facility") == 1
    finally:
        lab.close_attesters()


def test_measurements_that_change_without_a_reference_update(sensitive: LocalFacility) -> None:
    lab = Lab(sensitive)
    try:
        # The operator accepts two firmware builds; the device switches between them with no
        # new reference values: both attestations pass, the drift is still worth a look.
        admin = lab.olivia.admin
        scope = admin_pb2.REFERENCE_SCOPE_DEVICE
        current = lab.olivia.call(
            admin.ListReferenceValues,
            admin_pb2.ListReferenceValuesRequest(scope=scope, scope_id=DEVICE),
        ).versions[0]
        both = admin_pb2.ReferenceValues()
        both.CopyFrom(current)
        both.ClearField("version")
        both.firmware.append("qtestbed-simfw 1.1")
        lab.olivia.call(admin.SetReferenceValues, admin_pb2.SetReferenceValuesRequest(values=both))
        first = lab.attester()
        assert first.answer(first.evidence(first.challenge())).affirming
        assert _anomalies(sensitive, "measurement_drift") == []
        second = lab.attester()
        newer = dataclasses.replace(lab.measurements, firmware="qtestbed-simfw 1.1")
        verdict = second.answer(second.evidence(second.challenge(), measurements=newer))
        assert verdict.affirming, list(verdict.reasons)
        finding = _raised(sensitive, "measurement_drift")
        assert finding.detail["changed"] == ["firmware"]
        assert finding.detail["after"] == {"firmware": "qtestbed-simfw 1.1"}
        assert _counted(sensitive, "measurement_drift", DEVICE) == 1
    finally:
        lab.close_attesters()


def test_canaries_catch_a_device_whose_results_drifted(tmp_path: Path) -> None:
    canary = {"canary_interval_seconds": 0.5, "canary_fidelity_floor": 0.9}
    with LocalFacility(tmp_path / "facility", anomaly=canary) as facility:
        facility.start_broker()
        # sim-open is healthy; sim-restricted's hardware has drifted: its bits flip after the
        # run, which its attested calibration does not show.
        facility.start_driver("sim-open")
        facility.start_driver("sim-restricted", extra_config="simulated_drift = 0.2")
        finding = _raised(facility, "canary_fidelity_low")
        assert finding.subject == "sim-restricted"
        assert finding.detail["fidelity"] < 0.9
        metrics = scrape(facility)
        assert (
            metric_value(metrics, "qtestbed_canary_fidelity_ratio", device="sim-restricted") < 0.9
        )

        def healthy_canary() -> float | None:
            runs = metric_value(
                scrape(facility), "qtestbed_canary_runs_total", device="sim-open", outcome="ok"
            )
            return runs if runs >= 1 else None

        eventually(healthy_canary, what="a canary on the healthy device")
        assert (
            metric_value(scrape(facility), "qtestbed_canary_fidelity_ratio", device="sim-open")
            > 0.99
        )
        assert [e.subject for e in _anomalies(facility, "canary_fidelity_low")].count(
            "sim-open"
        ) == 0
        # Canaries are never jobs: no researcher sees them, and they are not in the store.
        olivia = facility.client("olivia")
        assert olivia.list_jobs() == []
        # Real jobs still run between canaries.
        alice = facility.client("alice")
        job = alice.submit(ghz_qasm2(3), device_id="sim-open", shots=100).job
        assert wait_state(alice, job.job_id, "COMPLETED").state


def test_a_normal_workload_raises_no_anomaly(tmp_path: Path) -> None:
    """Two researchers, each submitting their next job once the last one finished, an occasional
    refusal, healthy drivers, frequent canaries (the shipped thresholds otherwise)."""
    with LocalFacility(tmp_path / "facility", anomaly={"canary_interval_seconds": 1.0}) as facility:
        facility.start_broker()
        facility.start_driver("sim-open")
        facility.start_driver("sim-restricted")
        alice, bob = facility.client("alice"), facility.client("bob")
        facility.wait_available(alice, "sim-open")
        researchers = {"sim-open": alice, "sim-restricted": bob}
        last: dict[str, str] = {}
        for n in range(24):
            device = "sim-open" if n % 2 else "sim-restricted"
            client = researchers[device]
            if device in last:  # the researcher reads the last result before submitting again
                wait_state(client, last[device], "COMPLETED")
            last[device] = client.submit(ghz_qasm2(3), device_id=device, shots=200).job.job_id
            if n % 8 == 0:
                with pytest.raises(QtestbedError):  # a typo in a device name now and then
                    alice.submit(ghz_qasm2(2), device_id="sim-0pen", shots=10)
        for device, job_id in last.items():
            wait_state(researchers[device], job_id, "COMPLETED")
        # Submissions and refusals are judged inside the call that made them, so every one has
        # been by now. Canaries are judged when they come back: wait until each device has run
        # some, at least one of them after the workload.
        at_end = {device: _canaries(scrape(facility), device) for device in researchers}

        def canaries_after_the_workload() -> bool:
            metrics = scrape(facility)
            return all(_canaries(metrics, d) >= max(2, n + 1) for d, n in at_end.items())

        eventually(canaries_after_the_workload, what="canaries on both devices after the workload")
        metrics = scrape(facility)  # read after those canaries were counted, and judged
        for device in researchers:
            assert _canaries(metrics, device, "ok") == _canaries(metrics, device), device
        assert metric_value(metrics, "qtestbed_anomalies_total") == 0
        assert audit_entries(facility, kind="anomaly.raised") == []
