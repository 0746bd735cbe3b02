"""The simulators qtestbed ships, as backend plugins registered like any other (pyproject.toml:
`aer`, `aer_noisy`, `basic`). Their `[device]` table is the whole device description: size,
gates, wiring and the uniform error figures the simulated physics uses."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from qiskit import QuantumCircuit

from drivers.backends import Backend, make_backend
from drivers.device import DeviceDescription
from drivers.measure import control_software_version
from drivers.plugins.api import API_VERSION, Execution, Health, Prepared, RunOptions


class SimulatorPlugin:
    """A shipped simulator behind the plugin API; its calibration never changes."""

    def __init__(self, description: DeviceDescription, backend: Backend) -> None:
        self._description = description
        self._backend = backend

    @property
    def name(self) -> str:
        return self._description.backend

    @property
    def control_software(self) -> str:
        return control_software_version()

    def describe(self) -> DeviceDescription:
        return self._description

    def prepare(self, circuit: QuantumCircuit, seed: int | None = None) -> Prepared:
        return self._backend.prepare(circuit, seed)

    def run(
        self, prepared: Prepared, shots: int, *, memory: bool, options: RunOptions
    ) -> Execution:
        return self._backend.execute(prepared, shots, options.seed, memory=memory)

    def health(self) -> Health:
        return Health(ok=True)

    def cancel(self) -> bool:
        return False  # a simulation is short and cannot be interrupted; the driver drops it


def simulator(name: str, device: Mapping[str, Any], settings: Mapping[str, Any]) -> SimulatorPlugin:
    """The entry point of the three shipped simulators (which take no settings)."""
    if settings:
        raise ValueError(
            f"the {name} simulator takes no [backend_settings]; got {sorted(settings)}"
        )
    description = DeviceDescription.from_dict({"backend": name, **device})
    if description.backend != name:
        raise ValueError(
            f"[device] backend = {description.backend!r} but the driver chose backend {name!r}"
        )
    return SimulatorPlugin(description, make_backend(description))


simulator.api_version = API_VERSION  # type: ignore[attr-defined]
