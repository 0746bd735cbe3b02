"""Crashes of any process lose nothing and never complete a job twice."""

from __future__ import annotations

import signal
import socket

from qtestbed.cli.demo import ghz_qasm2
from qtestbed.testing import LocalFacility
from tests.integration.support import audit_kinds, state_name, wait_state


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_driver_killed_mid_job_requeues_and_completes_once_elsewhere(
    facility: LocalFacility,
) -> None:
    facility.start_broker()
    alice = facility.client("alice")
    slow = facility.start_driver("sim-open", extra_config="min_execution_seconds = 60.0")
    job = alice.submit(ghz_qasm2(4), device_id="sim-open", shots=500).job
    wait_state(alice, job.job_id, "RUNNING")
    slow.send_signal(signal.SIGKILL)
    slow.wait()
    requeued = wait_state(alice, job.job_id, "QUEUED", timeout=30)
    assert "driver lost" in requeued.reason
    facility.start_driver("sim-open")
    done = wait_state(alice, job.job_id, "COMPLETED")
    assert done.attempts == 2
    kinds = audit_kinds(facility, job.job_id)
    assert kinds.count("job.completed") == 1
    assert kinds.count("job.dispatched") == 2
    assert kinds.count("job.requeued") == 1
    result = alice.result(job.job_id)
    assert set(result.counts) <= {"0000", "1111"}
    assert alice.verify_result(result, done) == []


def test_broker_sigkill_after_submit_loses_no_job(facility: LocalFacility) -> None:
    grpc_port, link_port = _free_port(), _free_port()
    facility.start_broker_process(grpc_port=grpc_port, link_port=link_port)
    alice = facility.client("alice")
    submitted = [
        alice.submit(ghz_qasm2(3), device_id="sim-open", shots=100).job.job_id for _ in range(20)
    ]
    assert facility.broker_process is not None
    facility.broker_process.send_signal(signal.SIGKILL)
    facility.broker_process.wait()
    alice.close()
    facility.start_broker_process(grpc_port=grpc_port, link_port=link_port)
    alice = facility.client("alice")
    assert {j.job_id for j in alice.list_jobs(page_size=100)} == set(submitted)
    facility.start_driver("sim-open")
    for job_id in submitted:
        assert state_name(wait_state(alice, job_id, "COMPLETED")) == "COMPLETED"
        assert audit_kinds(facility, job_id).count("job.completed") == 1
