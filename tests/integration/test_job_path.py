"""A researcher's circuit from submission to signed result, through real processes."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from qtestbed.cli.demo import bell_qasm3, ghz_qasm2, ghz_qpy
from qtestbed.client import QtestbedError, submit_request, verify_result_offline
from qtestbed.testing import LocalFacility
from tests.integration.support import audit_kinds, metric_value, scrape, state_name, wait_state


@pytest.mark.parametrize(
    ("fmt", "payload", "width"),
    [("qasm2", ghz_qasm2(5), 5), ("qasm3", bell_qasm3(), 2), ("qpy", ghz_qpy(4), 4)],
)
def test_ghz_completes_with_only_all_zeros_or_all_ones(
    running: LocalFacility, fmt: str, payload: bytes, width: int
) -> None:
    alice = running.client("alice")
    job = alice.submit(payload, device_id="sim-open", shots=1000, fmt=fmt).job
    done = wait_state(alice, job.job_id, "COMPLETED", "FAILED")
    assert state_name(done) == "COMPLETED", done.reason
    result = alice.result(job.job_id)
    assert set(result.counts) <= {"0" * width, "1" * width}
    assert sum(result.counts.values()) == 1000
    assert len(result.counts) == 2  # both outcomes appear in 1000 shots
    assert alice.verify_result(result, done) == []
    kinds = audit_kinds(running, job.job_id)
    assert kinds[0] == "job.submitted"
    assert kinds.count("job.completed") == 1


def test_tampered_counts_fail_offline_receipt_check(running: LocalFacility) -> None:
    alice = running.client("alice")
    job = alice.submit(ghz_qasm2(3), device_id="sim-open", shots=200).job
    done = wait_state(alice, job.job_id, "COMPLETED")
    result = alice.result(job.job_id)
    result.counts["000"] += 1
    result.counts["111"] -= 1
    problems = verify_result_offline(result, done, running.root.joinpath("ca/ca.pem").read_bytes())
    assert any("result digest" in p for p in problems)


def test_device_above_tier_is_hidden_exactly_like_a_missing_one(running: LocalFacility) -> None:
    running.start_driver("sim-restricted")
    bob, alice = running.client("bob"), running.client("alice")
    running.wait_available(bob, "sim-restricted")
    assert "sim-restricted" not in {d.device_id for d in alice.devices()}
    answers = []
    for device in ("sim-restricted", "no-such-device"):
        with pytest.raises(QtestbedError) as refused:
            alice.submit(ghz_qasm2(3), device_id=device, shots=100)
        answers.append((refused.value.code, refused.value.message.replace(device, "X")))
    assert answers[0] == answers[1]
    assert answers[0][0] == "NOT_FOUND"
    assert alice.list_jobs() == []
    assert "job.dispatched" not in audit_kinds(running)


def test_job_outside_the_callers_projects_is_denied_with_rule_and_reason(
    running: LocalFacility,
) -> None:
    alice = running.client("alice")
    with pytest.raises(QtestbedError) as refused:
        alice.submit(ghz_qasm2(3), device_id="sim-open", shots=100, project="quantum-sensing")
    assert refused.value.code == "PERMISSION_DENIED"
    assert refused.value.rule_id == "researcher-submit/project"
    assert "not a member of project 'quantum-sensing'" in refused.value.message
    assert alice.list_jobs() == []
    assert "job.dispatched" not in audit_kinds(running)
    assert audit_kinds(running).count("clearance.denied") == 1
    metrics = scrape(running)
    assert (
        metric_value(
            metrics,
            "qtestbed_clearance_denials_total",
            rule="researcher-submit/project",
            stage="submit",
        )
        == 1
    )


def _not_the_device(kinds: list[str]) -> list[str]:
    return [kind for kind in kinds if not kind.startswith(("device.", "attestation."))]


def test_invalid_submissions_are_rejected_and_store_nothing(running: LocalFacility) -> None:
    alice = running.client("alice")
    # The device's own lifecycle (its attestation, its class) goes on being logged meanwhile.
    before = _not_the_device(audit_kinds(running))
    cases = [
        (b"OPENQASM 2.0;\nqreg q[2];\nfoo q[0];\n", 100, "qasm2"),
        (b"OPENQASM 3.0;\nqubit[2] q;\nh q[5];\n", 100, "qasm3"),
        (b"not a qpy file", 100, "qpy"),
        (b"\xff\xfe" * 10, 100, "qasm2"),
        (b"// " + b"x" * (300 * 1024), 100, "qasm2"),
        (ghz_qasm2(3), 0, "qasm2"),
        (ghz_qasm2(3), 10**9, "qasm2"),
    ]
    for payload, shots, fmt in cases:
        with pytest.raises(QtestbedError) as refused:
            alice.submit(payload, device_id="sim-open", shots=shots, fmt=fmt)
        assert refused.value.code == "INVALID_ARGUMENT", (payload[:20], refused.value)
        assert refused.value.message
    assert alice.list_jobs() == []
    assert _not_the_device(audit_kinds(running)) == before


def test_oversized_message_is_refused_by_the_transport(running: LocalFacility) -> None:
    alice = running.client("alice")
    with pytest.raises(QtestbedError) as refused:
        alice.submit(b"x" * (5 * 1024 * 1024), device_id="sim-open", shots=1, fmt="qasm2")
    assert refused.value.code == "RESOURCE_EXHAUSTED"
    assert alice.list_jobs() == []


def test_unknown_device_is_not_found(running: LocalFacility) -> None:
    with pytest.raises(QtestbedError) as refused:
        running.client("alice").submit(ghz_qasm2(2), device_id="nope", shots=10)
    assert refused.value.code == "NOT_FOUND"


def test_idempotent_retry_returns_the_same_job(running: LocalFacility) -> None:
    alice = running.client("alice")
    first = alice.submit(ghz_qasm2(2), device_id="sim-open", shots=10, idempotency_key="k-1")
    again = alice.submit(ghz_qasm2(2), device_id="sim-open", shots=10, idempotency_key="k-1")
    assert first.created
    assert not again.created
    assert again.job.job_id == first.job.job_id
    with pytest.raises(QtestbedError) as refused:
        alice.submit(ghz_qasm2(3), device_id="sim-open", shots=10, idempotency_key="k-1")
    assert refused.value.code == "FAILED_PRECONDITION"
    assert len(alice.list_jobs()) == 1


def test_researchers_see_only_their_own_jobs(running: LocalFacility) -> None:
    alice, bob = running.client("alice"), running.client("bob")
    job = alice.submit(ghz_qasm2(2), device_id="sim-open", shots=10).job
    with pytest.raises(QtestbedError) as refused:
        bob.get_job(job.job_id)
    assert refused.value.code == "NOT_FOUND"
    assert bob.list_jobs() == []
    assert [j.job_id for j in running.client("olivia").list_jobs()] == [job.job_id]


def test_health_service_answers_serving(running: LocalFacility) -> None:
    alice = running.client("alice")
    stub = health_pb2_grpc.HealthStub(alice._channel)
    reply = stub.Check(health_pb2.HealthCheckRequest(service="qtestbed.v1.JobService"))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_metrics_expose_the_core_families(running: LocalFacility) -> None:
    alice = running.client("alice")
    job = alice.submit(ghz_qasm2(2), device_id="sim-open", shots=10).job
    wait_state(alice, job.job_id, "COMPLETED")
    text = scrape(running)
    assert metric_value(text, "qtestbed_jobs_total", device="sim-open", state="COMPLETED") == 1
    assert metric_value(text, "qtestbed_attestation_verifications_total", outcome="affirming") >= 1
    assert metric_value(text, "qtestbed_queue_wait_seconds_count", device="sim-open") == 1
    assert metric_value(text, "qtestbed_execution_seconds_count", device="sim-open") == 1
    assert "qtestbed_queue_depth{" in text
    assert metric_value(text, "qtestbed_receipt_verifications_total", outcome="verified") == 1


def test_caller_without_a_registered_certificate_is_unauthenticated(
    running: LocalFacility, tmp_path_factory: pytest.TempPathFactory
) -> None:
    other = LocalFacility(tmp_path_factory.mktemp("other") / "facility")
    assert running.addresses is not None
    creds = grpc.ssl_channel_credentials(
        root_certificates=running.root.joinpath("ca/ca.pem").read_bytes(),
        private_key=other.root.joinpath("users/alice.key").read_bytes(),
        certificate_chain=other.root.joinpath("users/alice.pem").read_bytes(),
    )
    with grpc.secure_channel(running.addresses.grpc, creds) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        with pytest.raises(grpc.RpcError) as failed:
            stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE  # the TLS handshake is refused


def _hostile_qpy(num_qubits: int) -> bytes:
    """The GHZ QPY with its header's qubit count rewritten (a few hundred bytes, gigabytes
    of allocation for a parser that believes it)."""
    import struct

    payload = ghz_qpy(5)
    header = struct.pack(">HcHII", 0, b"f", 8, 5, 5)[2:]
    at = payload.index(header) + 3
    return payload[:at] + struct.pack(">I", num_qubits) + payload[at + 4 :]


def test_hostile_qpy_is_refused_and_the_broker_keeps_serving(running: LocalFacility) -> None:
    alice = running.client("alice")
    with pytest.raises(QtestbedError) as refused:
        alice.submit(_hostile_qpy(0x7FFF_FFFF), device_id="sim-open", shots=10, fmt="qpy")
    assert refused.value.code == "INVALID_ARGUMENT"
    assert alice.list_jobs() == []
    job = alice.submit(ghz_qasm2(3), device_id="sim-open", shots=50).job
    assert state_name(wait_state(alice, job.job_id, "COMPLETED")) == "COMPLETED"


def test_a_batch_is_queued_whole_or_not_at_all(running: LocalFacility) -> None:
    alice = running.client("alice")
    good = submit_request(ghz_qasm2(3), device_id="sim-open", shots=100)
    bad = submit_request(
        b"OPENQASM 2.0;\nqreg q[2];\nnot a gate q[0];\n",
        device_id="sim-open",
        shots=100,
        fmt="qasm2",
    )
    with pytest.raises(QtestbedError) as refused:
        alice.submit_many([good, bad, good])
    assert refused.value.code == "INVALID_ARGUMENT"
    assert refused.value.message.startswith("job 2 of 3 (nothing in the batch was queued): ")
    assert alice.list_jobs() == []
    for requests, wanted in (([], "the batch is empty"), ([good] * 101, "at most 100 jobs")):
        with pytest.raises(QtestbedError) as wrong:
            alice.submit_many(requests)
        assert wrong.value.code == "INVALID_ARGUMENT"
        assert wanted in wrong.value.message
    second = submit_request(ghz_qasm2(2), device_id="sim-open", shots=50)
    answers = alice.submit_many([good, second])
    assert [a.created for a in answers] == [True, True]
    for answer in answers:
        assert state_name(wait_state(alice, answer.job.job_id, "COMPLETED")) == "COMPLETED"
    # Retrying the same batch (same idempotency keys) returns the same jobs, queued once.
    again = alice.submit_many([good, second])
    assert [a.job.job_id for a in again] == [a.job.job_id for a in answers]
    assert [a.created for a in again] == [False, False]
