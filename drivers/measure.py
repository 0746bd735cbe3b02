"""Measurements a driver reports in its evidence, taken from what actually runs.

`driver_build` hashes the source of the driver and attestation packages as installed, and of the
backend plugin's own package when it comes from elsewhere, so an edited driver or plugin reports
a different measurement and the broker's appraisal keeps it out. `control_software` is what the
plugin reports its control stack to be (the shipped simulators: the Qiskit and Aer versions).
"""

from __future__ import annotations

import hashlib
from importlib import metadata
from pathlib import Path

import attestation
import drivers
from attestation.evidence import Measurements
from drivers.device import DeviceDescription


def driver_build_digest(plugin_root: Path | None = None) -> str:
    """SHA-256 over the driver's, attestation's and (if outside them) the plugin's sources."""
    digest = hashlib.sha256()
    roots = []
    for package in (drivers, attestation):
        assert package.__file__ is not None
        roots.append(Path(package.__file__).resolve().parent)
    if plugin_root is not None and not any(plugin_root.is_relative_to(r) for r in roots):
        roots.append(plugin_root)
    for root in roots:
        for source in sorted(root.rglob("*.py")):
            digest.update(str(source.relative_to(root.parent)).encode())
            digest.update(b"\0")
            digest.update(source.read_bytes())
            digest.update(b"\0")
    return "sha256:" + digest.hexdigest()


def control_software_version() -> str:
    """The simulator stack standing in for a testbed's control software."""
    return f"qiskit {metadata.version('qiskit')}; qiskit-aer {metadata.version('qiskit-aer')}"


def measure(
    description: DeviceDescription,
    firmware: str,
    *,
    control_software: str | None = None,
    plugin_root: Path | None = None,
) -> Measurements:
    """The measurements of `description` served by a plugin whose control stack reports
    `control_software` (default: the shipped simulators') and whose source is `plugin_root`."""
    return Measurements(
        firmware=firmware,
        control_software=control_software or control_software_version(),
        driver_build=driver_build_digest(plugin_root),
        calibration_digest=description.calibration_digest(),
        num_qubits=description.num_qubits,
        two_qubit_error=description.two_qubit_error,
        readout_error=description.readout_error,
        # The relaxation times the simulated physics uses: what is attested is what runs.
        t1_us=description.t1_us,
        t2_us=description.t2_us,
    )
