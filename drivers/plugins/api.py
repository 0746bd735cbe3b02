"""The backend plugin API, version 1: what a driver needs from the device it serves.

A backend plugin is a Python package that registers a factory under the entry-point group
`qtestbed.backends` (see `drivers.plugins.registry` and docs/drivers.md):

    [project.entry-points."qtestbed.backends"]
    my_device = "my_package.backend:factory"

The factory is called once, when the driver starts, with the driver file's `[device]` table and
the plugin's own `[backend_settings]` table, and returns a `BackendPlugin`. It declares the API
version it was written against as an attribute, `factory.api_version = API_VERSION`; a driver
refuses to start with a plugin written for another version.

The driver calls the plugin from worker threads, one job at a time: `describe` whenever it
(re)connects and between jobs (a new calibration re-attests the device), `prepare` then `run`
for each job, `health` between jobs, `cancel` from another thread while `run` is in progress.
Any exception from `prepare` or `run` fails that job with the exception's message, which the
researcher reads; a `ValueError` says no device could run the circuit (the job is not retried),
anything else a fault of this device (the broker retries the job elsewhere or later).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from qiskit import QuantumCircuit

from drivers.device import DeviceDescription
from drivers.faithful import DeviceTarget, NotValidForTarget, Prepared, prepare

__all__ = [
    "API_VERSION",
    "BackendFactory",
    "BackendPlugin",
    "Calibration",
    "DeviceDescription",
    "DeviceTarget",
    "Execution",
    "Health",
    "NotValidForTarget",
    "Prepared",
    "RunOptions",
    "prepare",
]

API_VERSION = 1


@dataclass(frozen=True, slots=True)
class Execution:
    """What one run produced: counts keyed by bitstrings as Qiskit prints them (clbit 0
    rightmost, no spaces between registers) and, when asked for, each shot's bitstring in
    shot order (the counts are their histogram)."""

    counts: dict[str, int]
    memory: list[str] | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class RunOptions:
    """Per-job options: `seed` for simulators (real hardware ignores it)."""

    seed: int | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Health:
    """Whether the device can take a job now; `detail` says why not (logged by the driver)."""

    ok: bool
    detail: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class Calibration:
    """A device's full calibration as its control system reports it: per-qubit and per-gate
    figures in a JSON-serialisable `document`. Its `digest` goes into the device description
    (`calibration_snapshot`), so the attested calibration digest changes when any figure does."""

    document: Mapping[str, Any] = field(repr=False)

    def digest(self) -> str:
        canonical = json.dumps(self.document, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class BackendPlugin(Protocol):
    """One device behind a driver. Implementations must be safe to call from worker threads
    (one job at a time; `cancel` concurrently with `run`)."""

    @property
    def name(self) -> str:
        """The entry-point name it was registered under (the description's `backend`)."""
        ...

    @property
    def control_software(self) -> str:
        """The version of the control stack that runs circuits, attested in the evidence."""
        ...

    def describe(self) -> DeviceDescription:
        """Target (qubits, basis gates, directed coupling map) and calibration now: uniform
        summary figures, plus `calibration_snapshot` when per-qubit figures exist."""
        ...

    def prepare(self, circuit: QuantumCircuit, seed: int | None = None) -> Prepared:
        """The circuit that will run for `circuit` under the faithful-execution contract
        (`drivers.faithful`): itself when valid for the target, else a level-0 translation;
        ValueError (NotValidForTarget in exact mode) for one this device cannot run."""
        ...

    def run(
        self, prepared: Prepared, shots: int, *, memory: bool, options: RunOptions
    ) -> Execution:
        """Run exactly `prepared.circuit` for `shots` shots; per-shot memory when `memory`."""
        ...

    def health(self) -> Health:
        """Cheap check between jobs (is the device reachable, calibrated, not in maintenance)."""
        ...

    def cancel(self) -> bool:
        """Stop the run in progress if the hardware can; True when it was stopped."""
        ...


class BackendFactory(Protocol):
    """What an entry point in `qtestbed.backends` loads."""

    api_version: int

    def __call__(
        self, name: str, device: Mapping[str, Any], settings: Mapping[str, Any]
    ) -> BackendPlugin:
        """A plugin for the driver file's `[device]` table and `[backend_settings]` table;
        ValueError naming the setting that is wrong."""
        ...
