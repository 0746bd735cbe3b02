"""Any Qiskit BackendV2 served as a testbed (entry point `qiskit`), and the adapter the
fake-device models use too (`drivers.plugins.fake_devices`).

The device description, calibration digest and the figures the export class is derived from are
read from the backend's target (`drivers.plugins.qiskit_calibration`) every time the driver asks,
so a backend whose target changes (a provider that refreshed its calibration) is re-attested and
re-classified. Circuits run under the faithful-execution contract against the backend's own
target: as sent when valid for it, else translated at optimisation level 0.

Settings of the `qiskit` entry point (`[backend_settings]`):

    backend = "my_vendor.provider:get_backend"   # module:callable returning a BackendV2
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Mapping
from importlib import metadata
from typing import Any, Protocol

from qiskit import QuantumCircuit

from drivers.backends import execution_of, prepare_circuit
from drivers.device import DeviceDescription
from drivers.plugins.api import API_VERSION, Execution, Health, Prepared, RunOptions
from drivers.plugins.qiskit_calibration import describe_target, device_target

# A new (backend, runner) when the device's calibration source changed, else None: the fake
# models re-read their snapshot file through it.
Refresh = Callable[[], "tuple[Any, Runner] | None"]


class QiskitBackendPlugin:
    """Serves `backend`; `runner` (default: the backend itself) runs the circuits, e.g. an Aer
    simulator built from the backend's noise; `refresh` offers a new pair when the device's
    calibration source changed."""

    def __init__(
        self,
        *,
        name: str,
        device_id: str,
        backend: Any,
        execution: str = "translate",
        runner: Runner | None = None,
        simulated: bool = False,
        refresh: Refresh | None = None,
    ) -> None:
        self._name = name
        self._device_id = device_id
        self._execution = execution
        self._simulated = simulated
        self._refresh = refresh
        self._lock = threading.Lock()
        self._use(backend, runner)

    def _use(self, backend: Any, runner: Runner | None) -> None:
        description = describe_target(
            backend.target, device_id=self._device_id, backend=self._name, execution=self._execution
        )
        with self._lock:
            self._backend = backend
            self._runner = runner if runner is not None else BackendRunner(backend)
            self._description = description
            self._target = device_target(description, backend.target)

    @property
    def name(self) -> str:
        return self._name

    @property
    def control_software(self) -> str:
        backend = self._backend
        version = getattr(backend, "backend_version", None) or getattr(backend, "version", "")
        stack = f"{backend.name} {version}; qiskit {metadata.version('qiskit')}"
        return stack + (f"; qiskit-aer {metadata.version('qiskit-aer')}" if self._simulated else "")

    def describe(self) -> DeviceDescription:
        renewed = self._refresh() if self._refresh is not None else None
        if renewed is not None:
            self._use(*renewed)
        return self._description

    def prepare(self, circuit: QuantumCircuit, seed: int | None = None) -> Prepared:
        with self._lock:
            target, backend = self._target, self._backend
        exact = self._execution == "exact"
        return prepare_circuit(self._name, circuit, target, exact, backend, seed)

    def run(
        self, prepared: Prepared, shots: int, *, memory: bool, options: RunOptions
    ) -> Execution:
        if isinstance(shots, bool) or shots < 1:
            raise ValueError(f"shots must be a positive integer, got {shots!r}")
        with self._lock:
            runner = self._runner
        return runner.execute(prepared.circuit, shots, memory=memory, seed=options.seed)

    def health(self) -> Health:
        status = getattr(self._backend, "status", None)
        if not callable(status):
            return Health(ok=True)
        report = status()
        ok = bool(getattr(report, "operational", True))
        return Health(ok=ok, detail=str(getattr(report, "status_msg", "")))

    def cancel(self) -> bool:
        with self._lock:
            runner = self._runner
        return runner.cancel()


class Runner(Protocol):
    """What runs the circuits of a Qiskit-described device."""

    def execute(
        self, circuit: QuantumCircuit, shots: int, *, memory: bool, seed: int | None
    ) -> Execution: ...

    def cancel(self) -> bool: ...


class BackendRunner:
    """Runs circuits on the Qiskit backend itself (a vendor's hardware through its provider);
    `cancel` cancels the job in flight when the provider can."""

    def __init__(self, backend: Any) -> None:
        self._backend = backend
        self._job: Any = None

    def execute(
        self, circuit: QuantumCircuit, shots: int, *, memory: bool, seed: int | None
    ) -> Execution:
        job = self._backend.run(circuit, shots=shots, memory=memory)
        self._job = job
        try:
            return execution_of(job.result(), memory)
        finally:
            self._job = None

    def cancel(self) -> bool:
        job = self._job
        if job is None or not hasattr(job, "cancel"):
            return False
        return bool(job.cancel())


def from_provider(
    name: str, device: Mapping[str, Any], settings: Mapping[str, Any]
) -> QiskitBackendPlugin:
    """Entry point `qiskit`: the BackendV2 `settings["backend"]` ("module:callable") returns."""
    unknown = sorted(set(settings) - {"backend"})
    if unknown:
        raise ValueError(f"unknown setting {unknown[0]!r}; the qiskit backend takes `backend`")
    source = settings.get("backend")
    if not isinstance(source, str) or ":" not in source:
        raise ValueError('set backend = "module:callable", a function returning a BackendV2')
    module, _, attribute = source.partition(":")
    try:
        make = getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"backend {source!r} cannot be loaded: {exc}") from exc
    return QiskitBackendPlugin(
        name=name,
        device_id=device_id_of(device),
        backend=make(),
        execution=execution_of_table(device),
    )


from_provider.api_version = API_VERSION  # type: ignore[attr-defined]


def device_id_of(device: Mapping[str, Any]) -> str:
    """The [device] table of a backend that describes itself: its id and execution mode only."""
    unknown = sorted(set(device) - {"device_id", "execution"})
    if unknown:
        raise ValueError(
            f"[device] {unknown[0]} is read from the backend itself; give device_id (and "
            "optionally execution) only"
        )
    device_id = device.get("device_id")
    if not isinstance(device_id, str) or not device_id:
        raise ValueError("[device] device_id is required")
    return device_id


def execution_of_table(device: Mapping[str, Any]) -> str:
    execution = device.get("execution", "translate")
    if not isinstance(execution, str):
        raise ValueError("[device] execution must be a string")
    return execution
