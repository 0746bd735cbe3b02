"""Realistic device models, ready to serve (entry point `qiskit_fake`): qiskit-ibm-runtime's fake
backends, each a real device's calibration snapshot (127-qubit heavy-hex FakeSherbrooke and
FakeBrisbane, 5-qubit FakeManilaV2, ...), served through the Qiskit adapter with Aer noise built
from that snapshot (`AerSimulator.from_backend`).

Settings (`[backend_settings]`):

    model = "FakeSherbrooke"          # a class of qiskit_ibm_runtime.fake_provider
    snapshot_file = "props.json"      # optional: calibration in IBM's properties format, used
                                      # instead of the model's own and re-read when it changes
    method = "matrix_product_state"   # optional Aer method

Wide devices default to Aer's matrix-product-state method: Aer simulates only the qubits a
circuit touches, and a GHZ state's low entanglement keeps the MPS small, so a 20-qubit GHZ on a
127-qubit noisy model takes seconds where a state vector of 20 noisy qubits takes minutes.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from drivers.plugins.aer_process import AerProcessRunner
from drivers.plugins.api import API_VERSION
from drivers.plugins.qiskit_backend import QiskitBackendPlugin, device_id_of, execution_of_table

_SETTINGS = frozenset({"model", "snapshot_file", "method"})
# Above this many qubits the default Aer method is the matrix product state (see above).
_MPS_ABOVE_QUBITS = 24


def fake_device(
    name: str, device: Mapping[str, Any], settings: Mapping[str, Any]
) -> QiskitBackendPlugin:
    unknown = sorted(set(settings) - _SETTINGS)
    if unknown:
        raise ValueError(f"unknown setting {unknown[0]!r}; known: {', '.join(sorted(_SETTINGS))}")
    model = settings.get("model")
    if not isinstance(model, str):
        raise ValueError('set model = "FakeSherbrooke" (a qiskit_ibm_runtime fake backend)')
    snapshot = Path(settings["snapshot_file"]) if "snapshot_file" in settings else None
    source = _Snapshot(model, snapshot, settings.get("method"))
    backend, runner = source.load()
    return QiskitBackendPlugin(
        name=name,
        device_id=device_id_of(device),
        backend=backend,
        runner=runner,
        execution=execution_of_table(device),
        simulated=True,
        refresh=source.changed,
    )


fake_device.api_version = API_VERSION  # type: ignore[attr-defined]


class _Snapshot:
    """A fake backend loaded from its model's snapshot, or from `path` (re-read on change)."""

    def __init__(self, model: str, path: Path | None, method: object) -> None:
        from qiskit_ibm_runtime import fake_provider

        make = getattr(fake_provider, model, None)
        if make is None or not model.startswith("Fake"):
            raise ValueError(f"model {model!r} is not a qiskit_ibm_runtime fake backend")
        if method is not None and not isinstance(method, str):
            raise ValueError("method must be an Aer simulation method name")
        self._model = model
        self._path = path
        self._method = method
        self._stamp = self._stat()
        self._runner: AerProcessRunner | None = None

    def _stat(self) -> tuple[int, int] | None:
        if self._path is None:
            return None
        try:
            info = self._path.stat()
        except OSError as exc:
            raise ValueError(f"snapshot_file {self._path} cannot be read: {exc}") from exc
        return (info.st_mtime_ns, info.st_size)

    def load(self) -> tuple[Any, AerProcessRunner]:
        backend = fake_backend(self._model, self._path)
        method = self._method or (
            "matrix_product_state" if backend.num_qubits > _MPS_ABOVE_QUBITS else "automatic"
        )
        if self._runner is not None:
            self._runner.close()
        self._runner = AerProcessRunner(self._model, self._path, str(method))
        return backend, self._runner

    def changed(self) -> tuple[Any, AerProcessRunner] | None:
        """A new backend and simulator when the snapshot file changed since it was read."""
        stamp = self._stat()
        if stamp == self._stamp:
            return None
        self._stamp = stamp
        return self.load()


def fake_backend(model: str, path: Path | None) -> Any:
    """The fake backend `model`, with its properties read from `path` when given."""
    from qiskit_ibm_runtime import fake_provider

    backend = getattr(fake_provider, model)()
    if path is not None:
        # The fake reads its properties from this file (an absolute path wins the join).
        backend.props_filename = str(path.resolve())
    return backend
