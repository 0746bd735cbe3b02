"""The two dispatch gates with real drivers: attestation evidence and clearance at dispatch."""

from __future__ import annotations

from pathlib import Path

import pytest

from attestation.keys import KeyKind, SigningKey, save_private_key
from qtestbed.cli.demo import ghz_qasm2
from qtestbed.client import QtestbedError
from qtestbed.testing import LocalFacility, eventually
from qtestbed.v1 import access_pb2
from tests.integration.support import (
    audit_entries,
    audit_kinds,
    metric_value,
    scrape,
    state_name,
    wait_broker_ticks,
    wait_state,
)


def _driver_config_with(facility: LocalFacility, device_id: str, old: str, new: str) -> Path:
    """A copy of the device's driver settings with one line changed."""
    source = facility.root / "drivers" / f"{device_id}.toml"
    text = source.read_text()
    assert old in text
    target = facility.root / "drivers" / f"{device_id}-altered.toml"
    target.write_text(text.replace(old, new, 1))
    return target


def _wait_attestation_failure(facility: LocalFacility, reason: str) -> str:
    def failed() -> str | None:
        text = scrape(facility)
        found = metric_value(
            text,
            "qtestbed_attestation_verifications_total",
            device="sim-open",
            outcome="contraindicated",
            reason=reason,
        )
        return text if found >= 1 else None

    return eventually(failed, timeout=60, what=f"an attestation failure with reason {reason}")


def test_forged_evidence_signature_gets_no_job(facility: LocalFacility) -> None:
    forged_key = facility.root / "devices" / "forged.key"
    save_private_key(SigningKey.generate(KeyKind.ED25519), forged_key)
    config = _driver_config_with(
        facility,
        "sim-open",
        'device_key = "../devices/sim-open.key"',
        f'device_key = "{forged_key}"',
    )
    facility.start_broker()
    alice = facility.client("alice")
    job = alice.submit(ghz_qasm2(3), device_id="sim-open", shots=100).job
    facility.start_driver("sim-open", config=config)
    _wait_attestation_failure(facility, "SIGNATURE_INVALID")
    # The broker refused the evidence; now the dispatcher looks at sim-open's queue with the
    # forged driver connected and idle, and must pass it over.
    wait_broker_ticks(facility, 3, device_id="sim-restricted")
    assert state_name(alice.get_job(job.job_id)) == "QUEUED"
    assert "job.dispatched" not in audit_kinds(facility)
    assert "attestation.failed" in audit_kinds(facility, "sim-open")
    device = next(d for d in alice.devices() if d.device_id == "sim-open")
    assert device.connected  # it was there all along, refused, not gone
    assert not device.available
    assert any("SIGNATURE_INVALID" in r for r in device.attestation_reasons)
    # The genuine driver then attests and the same job completes.
    facility.start_driver("sim-open")
    assert state_name(wait_state(alice, job.job_id, "COMPLETED")) == "COMPLETED"


def test_unexpected_firmware_measurement_gets_no_job(facility: LocalFacility) -> None:
    config = _driver_config_with(
        facility, "sim-open", 'firmware = "qtestbed-simfw 1.0"', 'firmware = "patched 6.6.6"'
    )
    facility.start_broker()
    alice = facility.client("alice")
    job = alice.submit(ghz_qasm2(3), device_id="sim-open", shots=100).job
    facility.start_driver("sim-open", config=config)
    _wait_attestation_failure(facility, "MEASUREMENT_FIRMWARE")
    # The device signed that evidence itself, so the broker also quarantines it: its queue is
    # held until an operator releases it. Then the dispatcher looks at that queue.
    eventually(
        lambda: metric_value(
            scrape(facility), "qtestbed_device_quarantines_total", device="sim-open"
        ),
        what="sim-open to be quarantined",
    )
    wait_broker_ticks(facility, 3, device_id="sim-restricted")
    held = alice.get_job(job.job_id)
    assert state_name(held) == "QUEUED"
    assert "is quarantined (attestation failed: MEASUREMENT_FIRMWARE" in held.waiting_for
    assert "job.dispatched" not in audit_kinds(facility)
    assert "device.quarantined" in audit_kinds(facility, "sim-open")
    assert next(d for d in alice.devices() if d.device_id == "sim-open").connected


def test_clearance_is_checked_again_right_before_dispatch(facility: LocalFacility) -> None:
    facility.start_broker()
    alice = facility.client("alice")
    job = alice.submit(ghz_qasm2(3), device_id="sim-open", shots=100).job
    assert state_name(job) == "QUEUED"
    # While the job waits (no driver yet), an operator ends alice's clearance.
    olivia = facility.client("olivia")
    record = olivia.call(olivia.access.GetPrincipal, access_pb2.GetPrincipalRequest(name="alice"))
    record.principal.clearance_expires_at.FromSeconds(1_577_836_800)  # 2020-01-01
    olivia.call(
        olivia.access.PutPrincipal,
        access_pb2.PutPrincipalRequest(
            principal=record.principal, expected_version=record.meta.version
        ),
    )
    facility.start_driver("sim-open")
    denied = wait_state(alice, job.job_id, "DENIED", "COMPLETED")
    assert state_name(denied) == "DENIED"
    assert denied.rule_id == "researcher-dispatch/clearance"
    assert "expired" in denied.reason
    assert "job.dispatched" not in audit_kinds(facility, job.job_id)
    # ...and at the driver: a later job reaches it (so it was listening), the denied one never.
    bob = facility.client("bob")
    later = bob.submit(ghz_qasm2(2), device_id="sim-open", shots=10).job
    wait_state(bob, later.job_id, "COMPLETED")
    driver_log = "".join(p.read_text() for p in facility.root.glob("driver-sim-open-*.log"))
    assert f"for job {later.job_id}" in driver_log
    assert job.job_id not in driver_log
    assert metric_value(scrape(facility), "qtestbed_clearance_denials_total", stage="dispatch") == 1
    # The audit log says who changed the clearance, and why the job was denied.
    changed = audit_entries(facility, kind="access.principal.updated")
    assert [(e.subject, e.detail["record"]["clearance_expires_at"]) for e in changed] == [
        ("alice", 1_577_836_800.0)
    ]
    denial = audit_entries(facility, kind="clearance.denied")[-1]
    assert denial.subject == job.job_id
    assert denial.detail["rule"] == "researcher-dispatch/clearance"
    assert "expired on 2020-01-01" in denial.detail["reason"]


def test_cancel_queued_and_running_jobs(facility: LocalFacility) -> None:
    facility.start_broker()
    alice = facility.client("alice")
    queued = alice.submit(ghz_qasm2(2), device_id="sim-open", shots=10).job
    cancelled = alice.cancel(queued.job_id)
    assert state_name(cancelled) == "CANCELLED"
    facility.start_driver("sim-open", extra_config="min_execution_seconds = 3.0")
    running = alice.submit(ghz_qasm2(2), device_id="sim-open", shots=10).job
    wait_state(alice, running.job_id, "RUNNING")
    assert state_name(alice.cancel(running.job_id)) == "CANCELLED"
    follow_up = alice.submit(ghz_qasm2(2), device_id="sim-open", shots=10).job
    assert state_name(wait_state(alice, follow_up.job_id, "COMPLETED")) == "COMPLETED"
    assert state_name(alice.get_job(running.job_id)) == "CANCELLED"
    assert "job.completed" not in audit_kinds(facility, running.job_id)


def test_an_invalid_policy_reload_is_refused_and_the_old_policies_kept(
    facility: LocalFacility,
) -> None:
    facility.start_broker()
    alice = facility.client("alice")
    policies = facility.root / "policy" / "policies.cedar"
    policies.write_text(
        '@id("broken")\n@reason("x")\npermit (principal, action, resource)'
        " when { principal.clearance_level > 3 };\n"
    )
    assert facility.embedded is not None
    broker = facility.embedded.broker
    assert broker is not None
    assert not facility.embedded.run(broker.reload())
    assert metric_value(scrape(facility), "qtestbed_policy_reload_failures_total") == 1
    assert "policy.reload_refused" in audit_kinds(facility)
    # The policies in force still decide: alice may submit, and under another project may not.
    assert state_name(alice.submit(ghz_qasm2(2), device_id="sim-open", shots=10).job) == "QUEUED"
    with pytest.raises(QtestbedError) as refused:
        alice.submit(ghz_qasm2(2), device_id="sim-open", shots=10, project="other")
    assert refused.value.rule_id == "researcher-submit/project"
