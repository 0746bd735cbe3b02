"""`qtestbed result` as a researcher runs it: it says whether the device ran the circuit as
submitted, saves the circuit it ran when it translated it, and a saved bundle whose executed
circuit was changed fails `qtestbed receipt verify`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from qiskit import qasm3

from qtestbed.cli.demo import ghz_qasm2
from qtestbed.testing import LocalFacility
from tests.e2e.console import json_output, qtestbed

# `mine` is no gate the simulator knows: the device must translate it (into h) to run it.
CUSTOM_GATE = b"""OPENQASM 2.0;
include "qelib1.inc";
gate mine a { h a; }
qreg q[2];
creg c[2];
mine q[0];
cx q[0],q[1];
cx q[0],q[1];
measure q -> c;
"""


@pytest.fixture
def cli_facility(tmp_path: Path) -> Iterator[tuple[LocalFacility, Path]]:
    root = tmp_path / "fac"
    assert qtestbed("init", str(root)).returncode == 0
    with LocalFacility(root) as facility:
        addresses = facility.start_broker_process()
        facility.start_driver("sim-open")
        profile = root / "users" / "alice.toml"
        profile.write_text(profile.read_text().replace("127.0.0.1:50051", addresses.grpc))
        facility.wait_available(facility.client("alice"), "sim-open")
        yield facility, profile


def _run(tmp_path: Path, profile: Path, name: str, payload: bytes) -> str:
    circuit = tmp_path / name
    circuit.write_bytes(payload)
    submitted = qtestbed(
        "submit",
        str(circuit),
        "--device",
        "sim-open",
        "--shots",
        "100",
        "--wait",
        "--json",
        profile=profile,
    )
    job_id: str = json_output(submitted)["job"]["job_id"]
    return job_id


def test_result_reports_and_saves_what_ran(
    cli_facility: tuple[LocalFacility, Path], tmp_path: Path
) -> None:
    facility, profile = cli_facility
    ca = str(facility.root / "ca" / "ca.pem")

    as_sent = _run(tmp_path, profile, "ghz.qasm", ghz_qasm2(3))
    shown = qtestbed("result", as_sent, profile=profile)
    assert shown.returncode == 0, shown.stderr
    assert "executed: exactly as submitted" in shown.stdout

    translated = _run(tmp_path, profile, "custom.qasm", CUSTOM_GATE)
    executed, bundle = tmp_path / "executed.qasm", tmp_path / "bundle.json"
    shown = qtestbed(
        "result",
        translated,
        "--executed-circuit",
        str(executed),
        "--save",
        str(bundle),
        profile=profile,
    )
    assert shown.returncode == 0, shown.stderr
    assert f"translated by the device at optimisation level 0 (saved to {executed})" in (
        shown.stdout
    )
    ran = qasm3.loads(executed.read_text())
    assert ran.count_ops()["cx"] == 2  # the identity pair is still there
    assert "mine" not in ran.count_ops()

    assert qtestbed("receipt", "verify", str(bundle), "--ca", ca).returncode == 0
    raw = json.loads(bundle.read_text())
    raw["executed_circuit"] = raw["executed_circuit"].replace("cx", "cz", 1)
    bundle.write_text(json.dumps(raw))
    forged = qtestbed("receipt", "verify", str(bundle), "--ca", ca)
    assert forged.returncode == 1
    assert "executed circuit does not match the digest the receipt names" in forged.stdout
