"""An Aer noise model of a device, simulated in a child process of the driver.

Aer holds Python's global lock while it simulates, and a 127-qubit noisy model takes seconds per
job: in the driver's own process that would stop its heartbeats and the broker would drop it
mid-job. In a child process the driver keeps talking, and a cancel can stop the run at once
(the child is ended and a new one started for the next job). The child builds the simulator
from the same model and snapshot file the driver described, once, and is spawned rather than
forked (the driver has ZeroMQ threads running).
"""

from __future__ import annotations

import multiprocessing
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from qiskit import QuantumCircuit

from drivers.plugins.api import Execution

_SIMULATOR: Any = None
# Aer turns the whole noise model into a document on every run: for a 127-qubit device that is
# most of a job's time (~4 of ~5 s for a GHZ-20 on a loaded machine). A job only needs the
# errors on the qubits it touches, so each job runs with the model restricted to them (cached by
# qubit set; the same seed gives the same counts as the full model).
_RESTRICTED: dict[frozenset[int], Any] = {}
_RESTRICTED_MAX = 64


class AerProcessRunner:
    """Runs circuits on `AerSimulator.from_backend(model with snapshot)` in one child process."""

    def __init__(self, model: str, snapshot: Path | None, method: str) -> None:
        self._spec = (model, str(snapshot) if snapshot is not None else None, method)
        self._lock = threading.Lock()
        self._pool = self._start()
        self._cancelled = False

    def _start(self) -> ProcessPoolExecutor:
        context = multiprocessing.get_context("spawn")
        # The child starts at the first job (which waits for it to build its simulator).
        return ProcessPoolExecutor(1, mp_context=context, initializer=_load, initargs=self._spec)

    def execute(
        self, circuit: QuantumCircuit, shots: int, *, memory: bool, seed: int | None
    ) -> Execution:
        with self._lock:
            pool = self._pool
            self._cancelled = False
        try:
            result: Execution = pool.submit(_simulate, circuit, shots, memory, seed).result()
        except BrokenProcessPool:
            if self._cancelled:
                raise RuntimeError("cancelled: the simulation was stopped") from None
            raise RuntimeError("the simulator process died; the job can be retried") from None
        return result

    def cancel(self) -> bool:
        """End the child (and the run in it); the next job gets a new one."""
        with self._lock:
            old, self._pool = self._pool, self._start()
            self._cancelled = True
        for process in list(getattr(old, "_processes", {}).values()):
            process.terminate()
        old.shutdown(wait=False, cancel_futures=True)
        return True

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _load(model: str, snapshot: str | None, method: str) -> None:
    """In the child: build the simulator once."""
    from qiskit_aer import AerSimulator

    from drivers.plugins.fake_devices import fake_backend

    global _SIMULATOR
    backend = fake_backend(model, Path(snapshot) if snapshot is not None else None)
    # One thread: the driver shares the machine with the broker.
    _SIMULATOR = AerSimulator.from_backend(backend, method=method, max_parallel_threads=1)


def _simulate(circuit: QuantumCircuit, shots: int, memory: bool, seed: int | None) -> Execution:
    from drivers.backends import execution_of

    noise = _noise_for(_active_qubits(circuit))
    options = {"noise_model": noise} if noise is not None else {}
    job = _SIMULATOR.run(circuit, shots=shots, memory=memory, seed_simulator=seed, **options)
    return execution_of(job.result(), memory)


def _active_qubits(circuit: QuantumCircuit) -> frozenset[int]:
    return frozenset(
        circuit.find_bit(qubit).index
        for item in circuit.data
        if item.operation.name != "barrier"
        for qubit in item.qubits
    )


def _noise_for(qubits: frozenset[int]) -> Any:
    """The simulator's noise model restricted to `qubits`; None (use the full model) when this
    Aer's noise model does not have the layout read here."""
    found = _RESTRICTED.get(qubits)
    if found is not None:
        return found
    from qiskit_aer.noise import NoiseModel

    base = _SIMULATOR.options.noise_model
    try:
        local = base._local_quantum_errors
        readout = base._local_readout_errors
        restricted = NoiseModel(basis_gates=base.basis_gates)
        restricted._custom_noise_passes = list(base._custom_noise_passes)
        if base._default_quantum_errors or base._default_readout_error is not None:
            return None  # errors on every qubit: nothing to leave out
    except AttributeError:
        return None
    for name, by_qubits in local.items():
        for where, error in by_qubits.items():
            if set(where) <= qubits:
                restricted.add_quantum_error(error, name, where)
    for where, error in readout.items():
        if set(where) <= qubits:
            restricted.add_readout_error(error, where)
    if len(_RESTRICTED) >= _RESTRICTED_MAX:
        _RESTRICTED.clear()
    _RESTRICTED[qubits] = restricted
    return restricted
