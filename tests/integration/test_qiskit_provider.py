"""The Qiskit provider against a real broker and a real driver (one facility for the module).

The facility runs an embedded broker and the sim-open driver (ideal Aer); sim-restricted has no
driver, so bob's jobs there stay queued. The session tests need the broker's session API.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator

import numpy as np
import pytest
from qiskit import ClassicalRegister, QuantumCircuit, QuantumRegister, transpile
from qiskit.circuit import Parameter, Qubit
from qiskit.providers import JobStatus, QiskitBackendNotFoundError

from qtestbed.client import Client, Profile, QtestbedError
from qtestbed.qiskit import (
    JobFailedError,
    QtestbedProvider,
    QtestbedSession,
    ReceiptVerificationError,
    Sampler,
)
from qtestbed.testing import LocalFacility
from qtestbed.v1 import jobs_pb2


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFacility]:
    with LocalFacility(tmp_path_factory.mktemp("qiskit") / "facility") as facility:
        facility.start_broker()
        facility.start_driver("sim-open")
        facility.wait_available(facility.client("olivia"), "sim-open")
        yield facility


def profile(lab: LocalFacility, name: str) -> Profile:
    assert lab.addresses is not None
    loaded = Profile.load(lab.root / "users" / f"{name}.toml")
    return dataclasses.replace(loaded, broker=lab.addresses.grpc)


@pytest.fixture
def alice(lab: LocalFacility) -> Iterator[QtestbedProvider]:
    with QtestbedProvider(profile(lab, "alice")) as provider:
        yield provider


def ghz(n: int) -> QuantumCircuit:
    circuit = QuantumCircuit(n, n, name=f"ghz{n}")
    circuit.h(0)
    for i in range(n - 1):
        circuit.cx(i, i + 1)
    circuit.measure(range(n), range(n))
    return circuit


def test_backends_and_target_describe_what_the_caller_may_use(
    alice: QtestbedProvider, lab: LocalFacility
) -> None:
    assert [b.name for b in alice.backends()] == ["sim-open"]
    assert alice.backends(min_num_qubits=6) == []
    assert alice.least_busy().name == "sim-open"
    with pytest.raises(QiskitBackendNotFoundError):
        alice.backend("sim-restricted")  # above alice's tier: answered like a missing device
    backend = alice.backend("sim-open")
    target = backend.target
    assert target.num_qubits == backend.num_qubits == 5
    assert set(target.operation_names) == {
        *("cx", "id", "rz", "sx", "x", "measure", "delay", "reset"),
        *("if_else", "while_loop", "for_loop", "switch_case"),  # Aer runs feed-forward
    }
    line = {(i, i + 1) for i in range(4)} | {(i + 1, i) for i in range(4)}
    assert set(target["cx"]) == line
    assert set(target.build_coupling_map().get_edges()) == line
    assert {q for (q,) in target["measure"]} == set(range(5))
    assert target["cx"][(0, 1)].error is None  # sim-open attests no two-qubit error
    assert backend.device.calibration_digest
    assert backend.max_circuits is None


def test_transpiled_ghz5_returns_only_all_zeros_or_all_ones(alice: QtestbedProvider) -> None:
    backend = alice.backend("sim-open")
    compiled = transpile(ghz(5), backend, seed_transpiler=7)
    job = backend.run(compiled, shots=1000)
    result = job.result(timeout=60)
    counts = result.get_counts()
    assert set(counts) <= {"00000", "11111"}
    assert sum(counts.values()) == 1000
    assert result.get_counts(compiled) == counts  # by circuit (name), as with any provider
    assert job.status() == JobStatus.DONE
    assert job.queue_position() is None
    assert job.eta() is None
    attested = job.attestation()
    assert attested.verified
    assert attested.calibration_digest == backend.device.calibration_digest
    assert len(attested.evidence_digest) == 64
    assert attested.measurements["firmware"] == "qtestbed-simfw 1.0"


def test_a_batch_of_three_runs_in_one_call(alice: QtestbedProvider) -> None:
    backend = alice.backend("sim-open")
    registers = QuantumCircuit(QuantumRegister(3, "q"), ClassicalRegister(1, "a"))
    registers.add_register(ClassicalRegister(2, "b"))
    registers.name = "two-registers"
    registers.x([0, 2])
    registers.measure([0, 1, 2], [0, 1, 2])  # a[0] = 1, b = (b1 b0) = 10
    loose = QuantumCircuit([Qubit(), Qubit()], ClassicalRegister(2, "c"), name="loose")
    loose.x(0)
    loose.measure([0, 1], [0, 1])  # qubits outside registers: travels as QPY
    job = backend.run([ghz(3), registers, loose], shots=200)
    assert len(job.broker_job_ids) == 3
    assert [s.circuit.fmt for s in job.submitted] == ["qasm2", "qasm2", "qpy"]
    result = job.result(timeout=60)
    assert len(result.results) == 3
    assert set(result.get_counts(0)) <= {"000", "111"}
    assert result.get_counts("two-registers") == {"10 1": 200}
    assert result.get_counts(2) == {"01": 200}
    assert result.results[1].job_id == job.broker_job_ids[1]


def test_sampler_returns_bitarrays_shaped_like_the_parameter_sets(
    alice: QtestbedProvider,
) -> None:
    backend = alice.backend("sim-open")
    theta = Parameter("theta")
    rotation = QuantumCircuit(1, name="ry")
    rotation.ry(theta, 0)
    rotation.measure_all()
    isa = transpile(rotation, backend, seed_transpiler=7)
    sweep = np.array([[0.0, math.pi], [math.pi, 0.0]])
    bell = transpile(ghz(2), backend, seed_transpiler=7)
    job = Sampler(backend=backend).run([(isa, sweep), (bell, None, 50)], shots=120)
    assert len(job.job.broker_job_ids) == 5
    result = job.result(timeout=60)
    swept = result[0].data.meas
    assert swept.shape == (2, 2)
    assert swept.num_shots == 120
    assert swept.num_bits == 1
    assert swept.get_counts((0, 0)) == {"0": 120}
    assert swept.get_counts((0, 1)) == {"1": 120}
    assert swept.get_counts((1, 0)) == {"1": 120}
    assert result[0].metadata["shots"] == 120
    pair = result[1].data.c
    assert pair.shape == ()
    assert pair.num_shots == 50
    assert set(pair.get_counts()) <= {"00", "11"}


def test_a_tampered_result_is_refused_loudly(
    lab: LocalFacility, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert lab.addresses is not None
    client = Client(profile(lab, "alice"))
    backend = QtestbedProvider(client).backend("sim-open")
    job = backend.run(ghz(3), shots=100)
    genuine = client.result

    def flipped_receipt(job_id: str) -> jobs_pb2.JobResult:
        result = genuine(job_id)
        receipt = bytearray(result.receipt)
        receipt[len(receipt) // 2] ^= 0x01
        result.receipt = bytes(receipt)
        return result

    def extra_count(job_id: str) -> jobs_pb2.JobResult:
        result = genuine(job_id)
        result.counts["000" if "000" in result.counts else "111"] += 1
        return result

    try:
        monkeypatch.setattr(client, "result", flipped_receipt)
        with pytest.raises(ReceiptVerificationError) as refused:
            job.result(timeout=60)
        assert refused.value.problems
        assert job.broker_job_ids[0] in str(refused.value)

        monkeypatch.setattr(client, "result", extra_count)
        with pytest.raises(ReceiptVerificationError) as refused:
            job.result(timeout=60)
        assert any("result digest" in p for p in refused.value.problems)
        unverified = job.result(timeout=60, verify=False)  # offline inspection only
        assert sum(unverified.get_counts().values()) == 101
        assert not job.outcomes(verify=False)[0].attestation.verified

        monkeypatch.setattr(client, "result", genuine)
        assert sum(job.result(timeout=60).get_counts().values()) == 100
    finally:
        client.close()


def test_a_queued_job_reports_status_place_and_cancels(lab: LocalFacility) -> None:
    """sim-restricted has no driver here: bob's jobs wait in its queue."""
    with QtestbedProvider(profile(lab, "bob")) as bob:
        backend = bob.backend("sim-restricted")
        first = backend.run(ghz(3), shots=10)
        second = backend.run([ghz(3), ghz(2)], shots=10)
        assert first.status() == JobStatus.QUEUED
        assert first.queue_position() == 1
        assert second.queue_position() == 2  # the first of its jobs still waiting
        eta = first.eta()
        assert eta is None or eta.tzinfo is not None
        assert first.cancel() is True
        assert first.status() == JobStatus.CANCELLED
        assert second.queue_position() == 1
        with pytest.raises(JobFailedError, match="CANCELLED"):
            first.result(timeout=10)
        assert second.cancel() is True
        assert second.status() == JobStatus.CANCELLED

        # A batch the broker refuses part of is not queued at all (one SubmitJobs call).
        with pytest.raises(QtestbedError, match="shots") as refused:
            backend.run_batch([(ghz(3), 10), (ghz(3), 10**7)])
        assert "job 2 of 2 (nothing in the batch was queued)" in refused.value.message
        jobs = bob.connection.client.list_jobs(device_id="sim-restricted")
        assert len(jobs) == 3  # first, and the two of second: nothing from the refused batch
        assert {job.state for job in jobs} == {jobs_pb2.JOB_STATE_CANCELLED}
    with (
        QtestbedProvider(profile(lab, "bob"), max_circuits=1) as limited,
        pytest.raises(ValueError, match="max_circuits"),
    ):
        limited.backend("sim-restricted").run([ghz(2), ghz(2)])


# --- sessions: need JobService.OpenSession/GetSession/CloseSession on the broker ---


def test_jobs_and_sampler_run_inside_a_session(alice: QtestbedProvider) -> None:
    backend = alice.backend("sim-open")
    with QtestbedSession(backend, max_seconds=120) as session:
        assert session.session_id
        job = backend.run(ghz(3), shots=50, session=session)
        assert set(job.result(timeout=60).get_counts()) <= {"000", "111"}
        assert job.broker_jobs()[0].session_id == session.session_id
        sampled = Sampler(session=session).run([ghz(2)], shots=40).result(timeout=60)
        assert sampled[0].data.c.num_shots == 40
        details = session.details()
        assert details.state == jobs_pb2.SESSION_STATE_OPEN
        assert details.device_id == "sim-open"
        assert details.jobs == 2
        opened = session.session_id
    assert session.session_id is None
    closed = alice.connection.client.session(opened)
    assert closed.state == jobs_pb2.SESSION_STATE_CLOSED
