"""Fetch a result, verify its receipt offline, and watch tampered copies be refused.

    python examples/verify_receipt.py --profile fac/users/alice.toml [--save bundle.json]

Runs a GHZ-3 circuit, then checks the result with nothing but the facility's root certificate
(the profile's `ca_cert`): the device certificate chain, the device's signature over job id,
circuit digest, shots and counts, and the attestation evidence the receipt names. It then edits
a count and a signature byte and shows that both copies fail. Exits 0 when the genuine result
verifies and both tampered copies are refused, 1 otherwise.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import json
import os
import sys
from pathlib import Path

from qiskit import QuantumCircuit, transpile
from qiskit.exceptions import QiskitError

from qtestbed.client import QtestbedError, verify_result_offline
from qtestbed.qiskit import QtestbedProvider, ReceiptVerificationError
from qtestbed.receipt_bundle import ResultBundle, verify_bundle


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    env = os.environ.get("QTESTBED_PROFILE")
    parser.add_argument("--profile", type=Path, default=env, required=env is None)
    parser.add_argument("--device", help="device id (default: the least busy available)")
    parser.add_argument("--save", type=Path, help="also write the result bundle here")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait")
    return parser.parse_args(argv)


def forged_signature(receipt: bytes) -> bytes:
    """The same receipt with one bit of its signature flipped."""
    envelope = json.loads(receipt)
    signature = bytearray(base64.b64decode(envelope["signatures"][0]["sig"]))
    signature[0] ^= 0x01
    envelope["signatures"][0]["sig"] = base64.b64encode(bytes(signature)).decode()
    return json.dumps(envelope).encode()


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    circuit = QuantumCircuit(3, 3, name="ghz3")
    circuit.h(0)
    circuit.cx(0, 1)
    circuit.cx(1, 2)
    circuit.measure(range(3), range(3))
    try:
        with QtestbedProvider(args.profile) as provider:
            backend = provider.backend(args.device) if args.device else provider.least_busy()
            job = backend.run(transpile(circuit, backend, seed_transpiler=11), shots=500)
            outcome = job.outcomes(timeout=args.timeout)[0]  # verified on the way in
            ca_pem = provider.connection.client.ca_pem
    except ReceiptVerificationError as exc:
        print(f"refused while fetching: {exc}", file=sys.stderr)
        return 1
    except (QtestbedError, QiskitError, OSError, ValueError) as exc:
        print(f"failed: {exc}", file=sys.stderr)
        return 1
    print(f"job {outcome.job.job_id} on {outcome.result.device_id}: {dict(outcome.result.counts)}")

    # Offline, from here on: only the facility root certificate is needed.
    problems = verify_result_offline(outcome.result, outcome.job, ca_pem)
    print("verify_result_offline: " + ("valid" if not problems else "; ".join(problems)))
    bundle = ResultBundle.from_json(outcome.bundle().to_json())  # what a researcher keeps
    if args.save:
        args.save.write_text(bundle.to_json())
        print(f"bundle saved to {args.save}")
    verdict = verify_bundle(bundle, ca_pem, circuit=outcome.submitted.circuit.payload)
    print("bundle: " + ("valid" if verdict.valid else "; ".join(verdict.problems)))
    for key in ("firmware", "driver_build", "calibration_digest"):
        print(f"  {key}: {verdict.measurements.get(key)}")
    genuine_ok = not problems and verdict.valid

    counts = dict(bundle.counts)
    first = next(iter(counts))
    counts[first] += 1
    tampered = {
        "one count changed": dataclasses.replace(bundle, counts=counts),
        "signature bit flipped": dataclasses.replace(
            bundle, receipt=forged_signature(bundle.receipt)
        ),
    }
    refused_all = True
    for label, copy in tampered.items():
        found = verify_bundle(copy, ca_pem).problems
        print(f"tampered ({label}): " + (f"refused: {'; '.join(found)}" if found else "ACCEPTED"))
        refused_all &= bool(found)
    ok = genuine_ok and refused_all
    print("ok" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
