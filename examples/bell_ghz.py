"""Bell and GHZ states through the Qiskit provider, as one batch.

    python examples/bell_ghz.py --profile fac/users/alice.toml [--device sim-open] [--qubits 5]

Transpiles both circuits for the device, runs them with one `backend.run` call, and prints the
verified counts and what the device attested to. Exits 0 when both results came back with valid
receipts and at least `--min-fraction` of the shots are all-zeros or all-ones; 1 otherwise, 3 when
a receipt does not verify.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from qiskit import QuantumCircuit, transpile
from qiskit.exceptions import QiskitError

from qtestbed.client import QtestbedError
from qtestbed.qiskit import QtestbedProvider, ReceiptVerificationError


def ghz(n: int) -> QuantumCircuit:
    circuit = QuantumCircuit(n, n, name="bell" if n == 2 else f"ghz{n}")
    circuit.h(0)
    for i in range(n - 1):
        circuit.cx(i, i + 1)
    circuit.measure(range(n), range(n))
    return circuit


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    env = os.environ.get("QTESTBED_PROFILE")
    parser.add_argument("--profile", type=Path, default=env, required=env is None)
    parser.add_argument("--device", help="device id (default: the least busy available)")
    parser.add_argument("--qubits", type=int, default=5, help="GHZ width (default 5)")
    parser.add_argument("--shots", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait")
    parser.add_argument("--min-fraction", type=float, default=0.5)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        with QtestbedProvider(args.profile) as provider:
            backend = (
                provider.backend(args.device)
                if args.device
                else provider.least_busy(min_num_qubits=args.qubits)
            )
            circuits = [ghz(2), ghz(args.qubits)]
            compiled = transpile(circuits, backend, seed_transpiler=11)
            job = backend.run(compiled, shots=args.shots)
            print(f"device {backend.name}: submitted jobs {', '.join(job.broker_job_ids)}")
            result = job.result(timeout=args.timeout)
            ok = True
            for index, circuit in enumerate(circuits):
                counts = result.get_counts(index)
                ideal = ("0" * circuit.num_clbits, "1" * circuit.num_clbits)
                fraction = sum(counts.get(key, 0) for key in ideal) / args.shots
                attested = job.attestation(index)
                top = sorted(counts.items(), key=lambda kv: -kv[1])[:4]
                print(f"{circuit.name}: counts {dict(top)}")
                print(f"  all-zeros or all-ones: {fraction:.1%}")
                print(f"  receipt: valid; calibration {attested.calibration_digest[:16]}...")
                ok &= fraction >= args.min_fraction
    except ReceiptVerificationError as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 3
    except (QtestbedError, QiskitError, OSError, ValueError) as exc:
        print(f"failed: {exc}", file=sys.stderr)
        return 1
    print("ok" if ok else f"FAILED: fewer than {args.min_fraction:.0%} ideal outcomes")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
