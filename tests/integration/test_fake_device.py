"""A 127-qubit device model (FakeSherbrooke's calibration snapshot, noise from it) through the
Qiskit adapter, behind a real broker and a real driver process: a researcher's transpiled GHZ-20
runs through qtestbed's Qiskit provider; the device's export class comes from the calibration it
attests (the mean two-qubit error, bounded by the operator's window), and when its calibration
changes it attests again and is classified again, and the policy follows: a researcher without
the export-control clearance (current dual-use training) is refused once it is controlled.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from qiskit import QuantumCircuit, transpile

from drivers.plugins.registry import load_backend
from qtestbed.client import QtestbedError
from qtestbed.facility_devices import add_device
from qtestbed.qiskit import QtestbedProvider
from qtestbed.testing import LocalFacility, eventually
from qtestbed.v1 import devices_pb2

DEVICE = "sherbrooke"
SETTINGS = {"model": "FakeSherbrooke"}
TABLES = f"""backend = "qiskit_fake"
calibration_poll_seconds = 0.5
[device]
device_id = "{DEVICE}"
[backend_settings]
model = "FakeSherbrooke"
snapshot_file = "sherbrooke-props.json"
"""
# Every working ECR pair at 5e-4: below the 100-199 qubit band's 1e-3 (controlled).
IMPROVED_ECR_ERROR = 5e-4


def improved(snapshot: dict[str, object]) -> dict[str, object]:
    gates = snapshot["gates"]
    assert isinstance(gates, list)
    for gate in gates:
        if gate["gate"] != "ecr":
            continue
        for parameter in gate["parameters"]:
            if parameter["name"] == "gate_error" and parameter["value"] < 1:
                parameter["value"] = IMPROVED_ECR_ERROR
    return snapshot


def digest_of(snapshot: Path) -> str:
    plugin = load_backend(
        "qiskit_fake", {"device_id": DEVICE}, {**SETTINGS, "snapshot_file": str(snapshot)}
    )
    return plugin.describe().calibration_digest()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFacility]:
    from qiskit_ibm_runtime.fake_provider import FakeSherbrooke

    root = tmp_path_factory.mktemp("fake127") / "facility"
    # Heartbeats at the shipped pace: loading a 127-qubit noise model is CPU-bound for seconds.
    timing = {"heartbeat_seconds": 1.0, "heartbeat_misses": 5}
    with LocalFacility(root, limits={"limits": {"max_qubits": 127}}, timing=timing) as facility:
        shipped = Path(FakeSherbrooke().dirname) / FakeSherbrooke.props_filename
        shutil.copy(shipped, root / "drivers" / "sherbrooke-props.json")
        better = root / "improved-props.json"
        better.write_text(json.dumps(improved(json.loads(shipped.read_text()))))
        add_device(
            root,
            facility.offline_ca,
            device_id=DEVICE,
            tier="open",
            driver_tables=TABLES,
            # The operator bounds the claimed error (so it may set the class) and has reviewed
            # the improved calibration beforehand.
            windows={"two_qubit_error": [1e-4, 0.05]},
            extra_calibration_digests=[digest_of(better)],
        )
        facility_toml = root / "facility.toml"
        # alice's dual-use training lapsed: she may use uncontrolled devices only.
        text = facility_toml.read_text()
        first = text.index("dual-use-awareness = ")
        end = text.index("\n", first)
        facility_toml.write_text(
            text[:first] + "dual-use-awareness = 2020-01-01T00:00:00Z" + text[end:]
        )
        facility.start_broker()
        facility.start_driver(DEVICE)
        facility.wait_available(facility.client("bob"), DEVICE, timeout=120)
        yield facility


def ghz(n: int) -> QuantumCircuit:
    circuit = QuantumCircuit(n, n)
    circuit.h(0)
    for i in range(n - 1):
        circuit.cx(i, i + 1)
    circuit.measure(range(n), range(n))
    return circuit


def run_ghz20(lab: LocalFacility, who: str) -> tuple[dict[str, int], str]:
    assert lab.addresses is not None
    with QtestbedProvider(lab.client(who).profile) as provider:
        backend = provider.backend(DEVICE)
        assert backend.num_qubits == 127
        compiled = transpile(ghz(20), backend, optimization_level=1, seed_transpiler=11)
        job = backend.run(compiled, shots=200)
        counts = job.result(timeout=120).get_counts()
        return counts, job.attestation().calibration_digest


def test_ghz20_on_the_127_qubit_model_through_the_provider_then_reclassified(
    lab: LocalFacility,
) -> None:
    bob = lab.client("bob")
    first = bob.device(DEVICE)
    assert first.num_qubits == 127
    assert first.export_class == "EAR99"  # its measured mean ECR error is ~1e-2
    assert 5e-3 < first.two_qubit_error < 5e-2

    counts, digest = run_ghz20(lab, "alice")
    ghz_fraction = (counts.get("0" * 20, 0) + counts.get("1" * 20, 0)) / sum(counts.values())
    assert 0.3 < ghz_fraction < 0.95  # a GHZ state, through the device's measured noise
    accepted = first.calibration_digest.split(",")  # the reference values: both calibrations
    assert digest in accepted

    # The device's calibration improves: the driver attests the new one, the broker classifies.
    snapshot = lab.root / "drivers" / "sherbrooke-props.json"
    staged = snapshot.with_suffix(".new")
    shutil.copy(lab.root / "improved-props.json", staged)
    staged.replace(snapshot)

    def controlled() -> devices_pb2.Device | None:
        device = bob.device(DEVICE)
        return device if device.export_class == "4A906.a" and device.available else None

    now = eventually(controlled, timeout=120, what="the new calibration to be attested")
    assert now.two_qubit_error == pytest.approx(IMPROVED_ECR_ERROR)

    circuit = (
        b'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[2];\ncreg c[2];\nx q[0];\nmeasure q -> c;\n'
    )
    alice = lab.client("alice")
    with pytest.raises(QtestbedError, match=r"dual-use-awareness training; yours expired"):
        alice.submit(circuit, device_id=DEVICE, shots=10)

    counts, attested = run_ghz20(lab, "bob")  # cleared: runs, under the new calibration
    assert attested in accepted
    assert attested != digest
