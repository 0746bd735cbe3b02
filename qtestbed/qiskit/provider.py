"""`QtestbedProvider`: the devices a researcher may use, as Qiskit backends.

The broker answers every device read with what the caller is cleared to see (a device above the
caller's tier looks exactly like one that does not exist), so `backends()` lists exactly those.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from types import TracebackType

from qiskit.providers import QiskitBackendNotFoundError

from qtestbed.client import QtestbedError
from qtestbed.qiskit.backend import DEFAULT_MAX_CIRCUITS, QtestbedBackend
from qtestbed.qiskit.connection import Connection, ProfileSource
from qtestbed.v1 import devices_pb2


class QtestbedProvider:
    def __init__(
        self, profile: ProfileSource, *, max_circuits: int | None = DEFAULT_MAX_CIRCUITS
    ) -> None:
        """`profile`: a client profile TOML written by `qtestbed init` (path), a `Profile`, or a
        `Client` (which stays the caller's to close)."""
        self.connection = Connection.open(profile)
        self._max_circuits = max_circuits

    def backends(
        self,
        name: str | None = None,
        *,
        min_num_qubits: int | None = None,
        basis_gates: Iterable[str] | None = None,
        tier: str | None = None,
        available: bool | None = None,
        filters: Callable[[QtestbedBackend], bool] | None = None,
    ) -> list[QtestbedBackend]:
        """The devices the caller may see that match every filter given: `available` means
        attested, connected and accepting work now; `basis_gates` must all be supported."""
        wanted = set(basis_gates or ())
        found = []
        for device in self.connection.client.devices():
            if not _matches(device, name, min_num_qubits, wanted, tier, available):
                continue
            backend = self._backend(device)
            if filters is None or filters(backend):
                found.append(backend)
        return found

    def backend(self, name: str) -> QtestbedBackend:
        try:
            device = self.connection.client.device(name)
        except QtestbedError as exc:
            if exc.code == "NOT_FOUND":
                raise QiskitBackendNotFoundError(
                    f"no device {name!r} among those you may use"
                ) from None
            raise
        return self._backend(device)

    def least_busy(
        self,
        *,
        min_num_qubits: int | None = None,
        basis_gates: Iterable[str] | None = None,
        tier: str | None = None,
    ) -> QtestbedBackend:
        """The available device with the fewest queued jobs among those matching."""
        candidates = self.backends(
            min_num_qubits=min_num_qubits, basis_gates=basis_gates, tier=tier, available=True
        )
        if not candidates:
            raise QiskitBackendNotFoundError("no available device matches")
        return min(candidates, key=lambda backend: backend.device.queue_depth)

    def close(self) -> None:
        """Close the connection if this provider opened it."""
        self.connection.close()

    def __enter__(self) -> QtestbedProvider:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _backend(self, device: devices_pb2.Device) -> QtestbedBackend:
        return QtestbedBackend(
            device, self.connection, provider=self, max_circuits=self._max_circuits
        )


def _matches(
    device: devices_pb2.Device,
    name: str | None,
    min_num_qubits: int | None,
    basis_gates: set[str],
    tier: str | None,
    available: bool | None,
) -> bool:
    return (
        (name is None or device.device_id == name)
        and (min_num_qubits is None or device.num_qubits >= min_num_qubits)
        and basis_gates <= set(device.basis_gates)
        and (tier is None or device.tier == tier)
        and (available is None or device.available == available)
    )
