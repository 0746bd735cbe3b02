"""A 20-qubit GHZ on the 127-qubit FakeSherbrooke noise model, served by the `qiskit_fake`
backend plugin exactly as a driver runs it (child process, Aer, one thread).

    .venv/bin/python bench/bench_device_model.py [--shots N] [--rounds R]

The circuit is the GHZ-20 a researcher transpiles for the device (optimisation level 1, a fixed
seed), so it spans all 127 qubits; Aer simulates only the 20 it touches. The plugin's default
method for a device this wide is the matrix product state; the baseline, in the same run and on
the same machine, is Aer's state vector on the same circuit, noise and shots. `RATIO` is the
state vector's median time over the matrix product state's. Each measurement runs after one
warm-up job (the child building its simulator), and every loop stops after `--rounds` jobs.
"""

from __future__ import annotations

import argparse
import statistics
import time

from qiskit import QuantumCircuit, transpile

from drivers.plugins.api import RunOptions
from drivers.plugins.registry import load_backend


def ghz20() -> QuantumCircuit:
    circuit = QuantumCircuit(20, 20)
    circuit.h(0)
    for i in range(19):
        circuit.cx(i, i + 1)
    circuit.measure(range(20), range(20))
    return circuit


def timed(method: str, shots: int, rounds: int) -> tuple[float, float]:
    """Median seconds per job, and the GHZ fraction of the last job."""
    from qiskit_ibm_runtime.fake_provider import FakeSherbrooke

    settings = {"model": "FakeSherbrooke", "method": method}
    plugin = load_backend("qiskit_fake", {"device_id": "bench"}, settings)
    compiled = transpile(ghz20(), FakeSherbrooke(), optimization_level=1, seed_transpiler=11)
    prepared = plugin.prepare(compiled)
    plugin.run(prepared, 1, memory=False, options=RunOptions(seed=1))  # warm-up
    times = []
    counts: dict[str, int] = {}
    for round_ in range(rounds):
        started = time.perf_counter()
        counts = plugin.run(prepared, shots, memory=False, options=RunOptions(seed=round_)).counts
        times.append(time.perf_counter() - started)
    ghz = (counts.get("0" * 20, 0) + counts.get("1" * 20, 0)) / shots
    return statistics.median(times), ghz


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shots", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"GHZ-20 on FakeSherbrooke (127 qubits), {args.shots} shots, median of {args.rounds}")
    mps, mps_ghz = timed("matrix_product_state", args.shots, args.rounds)
    print(f"  matrix_product_state  {mps:8.2f} s/job  GHZ fraction {mps_ghz:.2f}", flush=True)
    vector, vector_ghz = timed("statevector", args.shots, args.rounds)
    print(f"  statevector (base)    {vector:8.2f} s/job  GHZ fraction {vector_ghz:.2f}")
    print(f"RATIO statevector/mps {vector / mps:.1f}")


if __name__ == "__main__":
    main()
