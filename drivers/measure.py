"""Measurements a driver reports in its evidence, taken from what actually runs.

`driver_build` hashes the source of the driver and attestation packages as installed, so an
edited driver reports a different measurement and the broker's appraisal keeps it out.
"""

from __future__ import annotations

import hashlib
from importlib import metadata
from pathlib import Path

import attestation
import drivers
from attestation.evidence import Measurements
from drivers.device import DeviceDescription


def driver_build_digest() -> str:
    digest = hashlib.sha256()
    for package in (drivers, attestation):
        assert package.__file__ is not None
        root = Path(package.__file__).resolve().parent
        for source in sorted(root.rglob("*.py")):
            digest.update(str(source.relative_to(root.parent)).encode())
            digest.update(b"\0")
            digest.update(source.read_bytes())
            digest.update(b"\0")
    return "sha256:" + digest.hexdigest()


def control_software_version() -> str:
    """The simulator stack standing in for a testbed's control software."""
    return f"qiskit {metadata.version('qiskit')}; qiskit-aer {metadata.version('qiskit-aer')}"


def measure(description: DeviceDescription, firmware: str) -> Measurements:
    return Measurements(
        firmware=firmware,
        control_software=control_software_version(),
        driver_build=driver_build_digest(),
        calibration_digest=description.calibration_digest(),
        num_qubits=description.num_qubits,
        two_qubit_error=description.two_qubit_error,
        readout_error=description.readout_error,
        # The relaxation times the simulated physics uses: what is attested is what runs.
        t1_us=description.t1_us,
        t2_us=description.t2_us,
    )
