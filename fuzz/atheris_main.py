"""One target under atheris (libFuzzer): `python -m fuzz.atheris_main NAME [libFuzzer flags]`.

Only our own packages are instrumented for coverage; Qiskit, protobuf and cryptography run
uninstrumented (they are imported first), which keeps the rate up where our code decides."""

from __future__ import annotations

import sys

import atheris

# Imported before instrumentation so they stay uninstrumented.
import cryptography.x509  # noqa: F401
import google.protobuf.message  # noqa: F401
import qiskit
import qiskit.qpy  # noqa: F401


def main() -> None:
    name, flags = sys.argv[1], sys.argv[2:]
    with atheris.instrument_imports(include=["attestation", "broker", "qtestbed", "fuzz"]):
        from fuzz.targets import load

        target = load(name)
    target.prepare()
    atheris.Setup([sys.argv[0], *flags], target.one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
