"""The faithful-execution contract on every simulated device: as sent, level 0 only, or refused."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
from qiskit import QuantumCircuit, qasm2, qasm3, transpile
from qiskit.circuit import Gate

from drivers.backends import AerIdealBackend, AerNoisyBackend, make_backend
from drivers.device import DeviceDescription
from drivers.faithful import (
    DeviceTarget,
    NotValidForTarget,
    executed_circuit_digest,
    executed_circuit_text,
    first_violation,
)

NOISY = DeviceDescription(
    device_id="sim-noisy",
    num_qubits=3,
    basis_gates=("cx", "rz", "sx", "x"),
    coupling_map=((0, 1), (1, 2)),  # directed: cx 1 -> 0 is not native
    backend="aer_noisy",
    one_qubit_error=0.001,
    two_qubit_error=0.01,
    readout_error=0.01,
)
EXACT = dataclasses.replace(NOISY, execution="exact")


def cx_pairs(pairs: int, *, prefix: str = "") -> QuantumCircuit:
    qc = QuantumCircuit(2, 2)
    if prefix == "h":
        qc.h(0)
    for _ in range(pairs):
        qc.cx(0, 1)
        qc.cx(0, 1)
    qc.measure([0, 1], [0, 1])
    return qc


def test_isa_circuit_runs_exactly_as_sent_and_its_digest_is_the_submitted_one() -> None:
    sent = cx_pairs(5)
    sent.delay(100, 0, unit="ns")
    sent.reset(1)
    sent.barrier()
    payload = qasm2.dumps(cx_pairs(5)).encode()
    prepared = AerNoisyBackend(NOISY).prepare(sent)
    assert prepared.as_sent
    assert prepared.circuit is sent
    assert executed_circuit_text(prepared) == b""
    submitted = hashlib.sha256(payload).hexdigest()
    assert executed_circuit_digest(executed_circuit_text(prepared), submitted) == submitted


def test_non_isa_circuit_gets_level_0_translation_only() -> None:
    sent = cx_pairs(1, prefix="h")  # h is not in the basis; the cx pair is an identity
    # The translation must not be an optimisation: at level 2 Qiskit cancels the pair.
    optimised = transpile(sent, basis_gates=list(NOISY.basis_gates), optimization_level=2)
    assert "cx" not in optimised.count_ops()
    prepared = AerNoisyBackend(NOISY).prepare(sent, seed=1)
    assert not prepared.as_sent
    assert prepared.circuit.count_ops()["cx"] == 2
    assert "h" not in prepared.circuit.count_ops()
    text = executed_circuit_text(prepared)
    assert qasm3.loads(text.decode()).count_ops()["cx"] == 2  # the researcher can load it
    assert executed_circuit_digest(text, "a" * 64) == hashlib.sha256(text).hexdigest()


def test_reversed_cx_is_routed_not_run_against_the_coupling_map() -> None:
    sent = QuantumCircuit(2, 2)
    sent.cx(1, 0)
    sent.measure([0, 1], [0, 1])
    prepared = AerNoisyBackend(NOISY).prepare(sent, seed=1)
    assert not prepared.as_sent
    for item in prepared.circuit.data:
        if item.operation.name == "cx":
            pair = tuple(prepared.circuit.find_bit(q).index for q in item.qubits)
            assert pair in NOISY.coupling_map


@pytest.mark.parametrize(
    ("circuit", "fragment"),
    [
        (cx_pairs(1, prefix="h"), "instruction 0 (h on qubits [0]) is not in the device's basis"),
        (
            QuantumCircuit.from_qasm_str(
                'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[2];\ncreg c[2];\n'
                "cx q[1],q[0];\nmeasure q -> c;\n"
            ),
            "instruction 0 (cx on qubits [1, 0]) acts on qubits the device does not couple",
        ),
    ],
    ids=["basis", "coupling"],
)
def test_exact_device_refuses_naming_the_first_offending_instruction(
    circuit: QuantumCircuit, fragment: str
) -> None:
    backend = make_backend(EXACT)
    with pytest.raises(NotValidForTarget, match="runs circuits exactly as sent") as refused:
        backend.run(circuit, 100, seed=1)
    assert fragment in str(refused.value)
    assert "Transpile it for the device's target" in str(refused.value)
    assert backend.prepare(cx_pairs(3)).as_sent  # an ISA circuit still runs


def test_gate_borrowing_a_standard_name_is_never_run_as_the_standard_gate() -> None:
    body = QuantumCircuit(1)
    body.x(0)
    body.x(0)
    impostor = Gate("x", 1, [])
    impostor.definition = body  # named x, but acts as the identity
    sent = QuantumCircuit(1, 1)
    sent.append(impostor, [0])
    sent.measure(0, 0)
    assert not AerIdealBackend(1).prepare(sent).as_sent
    assert AerIdealBackend(1).run(sent, 100, seed=3) == {"0": 100}
    with pytest.raises(NotValidForTarget, match="not one of Qiskit's standard instructions"):
        make_backend(dataclasses.replace(EXACT, backend="aer")).prepare(sent)


def test_ideal_simulator_runs_native_circuits_as_sent() -> None:
    sent = cx_pairs(2, prefix="h")  # h is native to Aer, and an ideal device has any wiring
    prepared = make_backend(dataclasses.replace(NOISY, backend="aer")).prepare(sent)
    assert prepared.as_sent
    assert prepared.circuit is sent


def test_unknown_execution_mode_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="execution must be one of"):
        dataclasses.replace(NOISY, execution="optimise")


def feed_forward(body_gate: str) -> QuantumCircuit:
    qc = QuantumCircuit(2, 2)
    qc.sx(0)
    qc.measure(0, 0)
    with qc.if_test((qc.clbits[0], 1)):
        getattr(qc, body_gate)(1)
    qc.measure(1, 1)
    return qc


def test_feed_forward_runs_as_sent_where_the_device_runs_control_flow() -> None:
    ideal = make_backend(dataclasses.replace(EXACT, backend="aer"))
    prepared = ideal.prepare(feed_forward("x"))
    assert prepared.as_sent
    assert set(ideal.execute(prepared, 200, seed=2).counts) == {"00", "11"}
    # The noisy device states no control flow: an exact one refuses it, naming it.
    with pytest.raises(NotValidForTarget, match="does not run this classical control flow"):
        make_backend(EXACT).prepare(feed_forward("x"))


def test_a_body_that_is_not_valid_for_the_target_is_named_on_device_qubits() -> None:
    target = DeviceTarget(
        num_qubits=2,
        basis=frozenset({"sx", "x"}),
        edges=None,
        control_flow=frozenset({"if_else"}),
    )
    assert first_violation(feed_forward("x"), target) is None
    assert first_violation(feed_forward("y"), target) == (
        "in the body of instruction 2 (if_else on qubits [1]): "
        "instruction 0 (y on qubits [1]) is not in the device's basis gates ['sx', 'x']"
    )


def test_a_translation_too_large_to_report_is_not_run() -> None:
    prepared = AerNoisyBackend(NOISY).prepare(cx_pairs(1, prefix="h"), seed=1)
    assert executed_circuit_text(prepared)  # reportable at the real limit
    with pytest.raises(ValueError, match="transpile the circuit for the device's target"):
        executed_circuit_text(prepared, limit=64)
