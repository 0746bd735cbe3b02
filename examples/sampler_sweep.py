"""A parameter sweep of a one-qubit RY rotation through the Sampler, inside a session.

    python examples/sampler_sweep.py --profile fac/users/alice.toml [--device sim-open]

Opens a session on the device (its jobs run back to back), transpiles RY(theta) once, and sends
every angle as one Sampler pub: the parameters are bound on the client and each bound circuit is a
job. Prints P(1) against sin^2(theta/2) for each angle and the session's record. Exits 0 when
every point lies within `--tolerance` of the ideal curve, 1 otherwise (3: a receipt failed).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

import numpy as np
from qiskit import QuantumCircuit, transpile
from qiskit.circuit import Parameter
from qiskit.exceptions import QiskitError

from qtestbed.client import QtestbedError
from qtestbed.qiskit import QtestbedProvider, QtestbedSession, ReceiptVerificationError, Sampler


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    env = os.environ.get("QTESTBED_PROFILE")
    parser.add_argument("--profile", type=Path, default=env, required=env is None)
    parser.add_argument("--device", help="device id (default: the least busy available)")
    parser.add_argument("--points", type=int, default=7, help="angles from 0 to pi")
    parser.add_argument("--shots", type=int, default=400)
    parser.add_argument("--tolerance", type=float, default=0.15)
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds to wait")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    theta = Parameter("theta")
    rotation = QuantumCircuit(1, name="ry-sweep")
    rotation.ry(theta, 0)
    rotation.measure_all()
    angles = np.linspace(0.0, math.pi, args.points)
    try:
        with QtestbedProvider(args.profile) as provider:
            backend = provider.backend(args.device) if args.device else provider.least_busy()
            isa = transpile(rotation, backend, seed_transpiler=11)
            with QtestbedSession(backend, max_seconds=args.timeout) as session:
                print(f"session {session.session_id} open on {backend.name}")
                sampler = Sampler(session=session, default_shots=args.shots)
                job = sampler.run([(isa, angles)])
                bits = job.result(timeout=args.timeout)[0].data.meas
                record = session.details()
            print(f"session ran {record.jobs} jobs and is closed")
    except ReceiptVerificationError as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 3
    except (QtestbedError, QiskitError, OSError, ValueError) as exc:
        print(f"failed: {exc}", file=sys.stderr)
        return 1
    print(f"{bits.shape[0]} angles x {bits.num_shots} shots, receipts verified")
    print(" theta    P(1)   sin^2(theta/2)")
    worst = 0.0
    for index, angle in enumerate(angles):
        measured = bits.get_counts(index).get("1", 0) / bits.num_shots
        ideal = math.sin(angle / 2) ** 2
        worst = max(worst, abs(measured - ideal))
        print(f" {angle:5.3f}  {measured:6.3f}  {ideal:6.3f}")
    ok = worst <= args.tolerance
    print(f"largest deviation {worst:.3f}: " + ("ok" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
