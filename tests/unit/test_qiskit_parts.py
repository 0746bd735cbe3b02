"""The Qiskit provider's pieces that need no broker: target, circuit encoding, counts layout,
status mapping and the result a Qiskit user reads."""

from __future__ import annotations

import pytest
from qiskit import ClassicalRegister, QuantumCircuit, QuantumRegister, qasm2, qasm3
from qiskit.circuit import Parameter, Qubit
from qiskit.providers import JobStatus

from qtestbed.client import QtestbedError
from qtestbed.qiskit.connection import retry_wait
from qtestbed.qiskit.encoding import encode_circuit
from qtestbed.qiskit.layout import ClassicalLayout, CountsFormatError
from qtestbed.qiskit.status import batch_status
from qtestbed.qiskit.target import build_target
from qtestbed.v1 import devices_pb2, jobs_pb2


def device(**fields: object) -> devices_pb2.Device:
    base: dict[str, object] = {
        "device_id": "dev",
        "num_qubits": 3,
        "basis_gates": ["cx", "rz", "sx", "x", "not-a-gate"],
        "coupling_map": [devices_pb2.CouplingEdge(control=0, target=1)],
    }
    return devices_pb2.Device(**{**base, **fields})  # type: ignore[arg-type]


def test_target_follows_the_device_description() -> None:
    target = build_target(device(two_qubit_error=0.02))
    assert target.num_qubits == 3
    assert set(target.operation_names) == {"cx", "rz", "sx", "x", "measure", "delay", "reset"}
    assert set(target["delay"]) == set(target["reset"]) == {(0,), (1,), (2,)}
    assert list(target["cx"]) == [(0, 1)]
    assert target["cx"][(0, 1)].error == pytest.approx(0.02)
    assert set(target["sx"]) == {(0,), (1,), (2,)}


def test_an_empty_coupling_map_wires_every_pair() -> None:
    target = build_target(device(coupling_map=[]))
    assert len(list(target["cx"])) == 6
    assert target["cx"][(2, 0)].error is None


def test_encoding_prefers_qasm2_and_falls_back_to_qpy() -> None:
    circuit = QuantumCircuit(2, 2)
    circuit.h(0)
    circuit.cx(0, 1)
    circuit.measure([0, 1], [0, 1])
    encoded = encode_circuit(circuit)
    assert encoded.fmt == "qasm2"
    assert qasm2.loads(encoded.payload.decode()).num_qubits == 2
    assert encoded.message().format == jobs_pb2.CIRCUIT_FORMAT_OPENQASM2
    loose = QuantumCircuit([Qubit(), Qubit()], ClassicalRegister(2))
    loose.measure([0, 1], [0, 1])
    assert encode_circuit(loose).fmt == "qpy"


def test_timed_delays_and_feed_forward_travel_as_openqasm3_with_their_units() -> None:
    circuit = QuantumCircuit(2, 2)
    circuit.delay(2e-7, 0, unit="s")
    circuit.delay(300, 1, unit="ns")
    circuit.measure(0, 0)
    with circuit.if_test((circuit.clbits[0], 1)):
        circuit.x(1)
    circuit.measure(1, 1)
    encoded = encode_circuit(circuit)
    assert encoded.fmt == "qasm3"
    assert encoded.message().format == jobs_pb2.CIRCUIT_FORMAT_OPENQASM3
    back = qasm3.loads(encoded.payload.decode())
    delays = [(i.operation.params[0], i.operation.unit) for i in back.data if i.name == "delay"]
    assert delays == [(2e-7, "s"), (300, "ns")]
    assert "if_else" in back.count_ops()
    in_samples = QuantumCircuit(1, 1)
    in_samples.delay(16, 0)  # dt: no unit to lose
    in_samples.measure(0, 0)
    assert encode_circuit(in_samples).fmt == "qasm2"


def test_circuits_the_provider_cannot_read_back_are_refused_before_submitting() -> None:
    theta = Parameter("theta")
    unbound = QuantumCircuit(1, 1)
    unbound.ry(theta, 0)
    unbound.measure(0, 0)
    with pytest.raises(ValueError, match="unbound parameters"):
        encode_circuit(unbound)
    with pytest.raises(ValueError, match="measures nothing"):
        encode_circuit(QuantumCircuit(1))
    shared = QuantumCircuit(QuantumRegister(1), ClassicalRegister(1, "a"))
    shared.add_register(ClassicalRegister(bits=list(shared.clbits), name="alias"))
    shared.measure(0, 0)
    with pytest.raises(ValueError, match="exactly one ClassicalRegister"):
        encode_circuit(shared)


def test_layout_reads_bitstring_and_hex_keys() -> None:
    circuit = QuantumCircuit(QuantumRegister(3), ClassicalRegister(1, "a"))
    circuit.add_register(ClassicalRegister(2, "b"))
    layout = ClassicalLayout.of(circuit)
    assert layout.header()["creg_sizes"] == [["a", 1], ["b", 2]]
    assert layout.registers == (("a", (0,)), ("b", (1, 2)))
    assert layout.outcomes({"101": 3, "0x5": 2, "10 1": 1}) == {5: 6}
    for bad in ("1011", "0x8", "12", ""):
        with pytest.raises(CountsFormatError):
            layout.outcomes({bad: 1})


def test_batch_status() -> None:
    def jobs(*states: int) -> list[jobs_pb2.Job]:
        return [jobs_pb2.Job(state=s) for s in states]  # type: ignore[arg-type]

    assert batch_status(jobs(jobs_pb2.JOB_STATE_QUEUED)) == JobStatus.QUEUED
    assert batch_status(jobs(jobs_pb2.JOB_STATE_DISPATCHED)) == JobStatus.RUNNING
    done, queued = jobs_pb2.JOB_STATE_COMPLETED, jobs_pb2.JOB_STATE_QUEUED
    assert batch_status(jobs(done, queued)) == JobStatus.RUNNING
    assert batch_status(jobs(done, done)) == JobStatus.DONE
    assert batch_status(jobs(done, jobs_pb2.JOB_STATE_DENIED)) == JobStatus.ERROR
    assert batch_status(jobs(queued, jobs_pb2.JOB_STATE_CANCELLED)) == JobStatus.CANCELLED


@pytest.mark.parametrize(
    ("code", "given", "attempt", "waited", "expected"),
    [
        ("UNAVAILABLE", None, 0, 0.0, 0.2),  # transient: the backoff
        ("UNAVAILABLE", 5.0, 0, 0.0, 5.0),  # the broker's delay when it gave one (an outage)
        ("RESOURCE_EXHAUSTED", 0.05, 2, 0.0, 0.8),  # never shorter than the backoff
        ("RESOURCE_EXHAUSTED", None, 0, 0.0, None),  # a limit with no delay: not waited out
        ("RESOURCE_EXHAUSTED", 86_400.0, 0, 0.0, None),  # a quota until tomorrow: raised
        ("RESOURCE_EXHAUSTED", 20.0, 1, 45.0, None),  # past a minute in all: raised
        ("UNAVAILABLE", None, 5, 0.0, None),  # the last attempt
        ("INVALID_ARGUMENT", 1.0, 0, 0.0, None),  # never retried
    ],
)
def test_a_batch_is_retried_as_the_broker_advises(
    code: str, given: float | None, attempt: int, waited: float, expected: float | None
) -> None:
    error = QtestbedError(code, "refused", retry_after_seconds=given)
    assert retry_wait(error, attempt, waited) == expected
