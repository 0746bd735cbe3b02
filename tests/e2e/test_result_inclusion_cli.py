"""`qtestbed result --save` then `qtestbed receipt verify --audit-key`, as a researcher runs them:
the saved bundle proves its result is in the facility's signed audit log, offline, against the
pinned broker certificate; a changed byte of the saved entry, or another key, fails."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from qtestbed.cli.demo import ghz_qasm2
from qtestbed.testing import LocalFacility
from tests.e2e.console import json_output, qtestbed


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


def test_saved_bundle_proves_inclusion_offline(
    cli_facility: tuple[LocalFacility, Path], tmp_path: Path
) -> None:
    facility, profile = cli_facility
    circuit = tmp_path / "ghz.qasm"
    circuit.write_bytes(ghz_qasm2(3))
    submitted = qtestbed(
        "submit",
        str(circuit),
        "--device",
        "sim-open",
        "--shots",
        "200",
        "--wait",
        "--json",
        profile=profile,
    )
    job_id = json_output(submitted)["job"]["job_id"]
    bundle = tmp_path / "bundle.json"
    saved = qtestbed("result", job_id, "--save", str(bundle), profile=profile)
    assert saved.returncode == 0, saved.stderr
    assert "audit inclusion" not in saved.stderr  # no warning: the proof was saved
    ca = str(facility.root / "ca" / "ca.pem")
    pinned = str(facility.root / "broker" / "broker.pem")

    verified = qtestbed("receipt", "verify", str(bundle), "--ca", ca, "--audit-key", pinned)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "audit log: the result is in the log signed by audit key" in verified.stdout
    body = json_output(
        qtestbed("receipt", "verify", str(bundle), "--ca", ca, "--audit-key", pinned, "--json")
    )
    assert body["audit_inclusion"] == "verified"

    unpinned = qtestbed("receipt", "verify", str(bundle), "--ca", ca)
    assert unpinned.returncode == 0
    assert "inclusion not checked" in unpinned.stdout

    other_key = qtestbed("receipt", "verify", str(bundle), "--ca", ca, "--audit-key", ca)
    assert other_key.returncode == 1
    assert "not signed" in other_key.stdout

    raw = json.loads(bundle.read_text())
    entry = bytearray(base64.b64decode(raw["audit_inclusion"]["entry"]))
    entry[len(entry) // 2] ^= 0x01
    raw["audit_inclusion"]["entry"] = base64.b64encode(bytes(entry)).decode()
    bundle.write_text(json.dumps(raw))
    forged = qtestbed("receipt", "verify", str(bundle), "--ca", ca, "--audit-key", pinned, "--json")
    verdict = json_output(forged, code=1)
    assert verdict["valid"] is False
    assert verdict["audit_inclusion"] == "failed"
