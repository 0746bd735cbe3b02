"""What `qtestbed driver check` runs and reads without a broker: the circuit chosen from the
device description, how its counts are judged, and the refusal it reports from driver logs."""

from __future__ import annotations

from pathlib import Path

from drivers.device import DeviceDescription
from qtestbed.driver_check import refusal_in_logs
from qtestbed.driver_check_probe import Probe


def _device(basis: tuple[str, ...], execution: str, **errors: float) -> DeviceDescription:
    return DeviceDescription(
        device_id="d",
        num_qubits=4,
        basis_gates=basis,
        coupling_map=(),
        backend="b",
        execution=execution,
        **errors,  # type: ignore[arg-type]
    )


def test_a_device_that_translates_or_runs_h_gets_ghz() -> None:
    for probe in (
        Probe(_device(("sx", "rz", "cx"), "translate")),
        Probe(_device(("h", "cx"), "exact")),
    ):
        assert probe.quantum
        assert b"h q[0];" in probe.qasm(3)
        right, seen, _expected = probe.judge({"000": 1000, "111": 1000}, 3, 2000)
        assert right
        assert seen == "P(000)=0.500, P(111)=0.500 over 2000 shots"
        assert not probe.judge({"000": 2000}, 3, 2000)[0]  # not a superposition


def test_a_classical_exact_device_gets_the_x_cx_chain_judged_as_all_ones() -> None:
    probe = Probe(_device(("x", "cx", "ccx"), "exact"))
    assert not probe.quantum
    qasm = probe.qasm(3).decode()
    assert "h " not in qasm
    assert "x q[0];" in qasm
    assert "cx q[1],q[2];" in qasm
    assert probe.judge({"111": 2000}, 3, 2000) == (
        True,
        "P(111)=1.000 over 2000 shots",
        "P(111) >= 0.950",
    )
    assert not probe.judge({"111": 1000, "000": 1000}, 3, 2000)[0]


def test_the_bound_loosens_with_the_device_error_figures() -> None:
    exact = Probe(_device(("h", "cx"), "exact"))
    noisy = Probe(
        _device(
            ("h", "cx"), "exact", two_qubit_error=0.02, one_qubit_error=0.001, readout_error=0.02
        )
    )
    assert exact.bound(3) == 0.95
    assert 0.7 < noisy.bound(3) < 0.95


def test_the_refusal_reported_is_the_last_one_the_driver_logged(tmp_path: Path) -> None:
    assert refusal_in_logs(tmp_path) == "the driver logged nothing"
    (tmp_path / "driver-d-0.log").write_text("starting\nattestation refused: OLD\n")
    (tmp_path / "driver-d-1.log").write_text(
        "x ERROR attestation refused: FIRMWARE: got 'x'\nbye\n"
    )
    assert refusal_in_logs(tmp_path) == "attestation refused: FIRMWARE: got 'x'"
    (tmp_path / "driver-d-0.log").write_text("connecting\n")
    (tmp_path / "driver-d-1.log").write_text("cannot reach the broker\n")
    assert refusal_in_logs(tmp_path) == "the driver's last words: 'cannot reach the broker'"
