"""The examples/ scripts as a researcher runs them, against a local facility (embedded broker
and the sim-open driver). `sampler_sweep.py` needs the broker's session API."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from qtestbed.testing import LocalFacility

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def profile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with LocalFacility(tmp_path_factory.mktemp("examples") / "facility") as facility:
        addresses = facility.start_broker()
        facility.start_driver("sim-open")
        facility.wait_available(facility.client("olivia"), "sim-open")
        path = facility.root / "users" / "alice-here.toml"  # next to alice's key and cert
        text = (facility.root / "users" / "alice.toml").read_text()
        path.write_text(text.replace("127.0.0.1:50051", addresses.grpc))
        yield path


def example(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_bell_ghz(profile: Path) -> None:
    done = example("bell_ghz.py", "--profile", str(profile), "--shots", "500")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "device sim-open" in done.stdout
    assert "bell: counts" in done.stdout
    assert "ghz5: counts" in done.stdout
    assert "all-zeros or all-ones: 100.0%" in done.stdout
    assert done.stdout.count("receipt: valid") == 2
    refused = example("bell_ghz.py", "--profile", str(profile), "--device", "sim-restricted")
    assert refused.returncode == 1
    assert "no device 'sim-restricted'" in refused.stderr


def test_verify_receipt(profile: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle.json"
    done = example("verify_receipt.py", "--profile", str(profile), "--save", str(bundle))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "verify_result_offline: valid" in done.stdout
    assert "bundle: valid" in done.stdout
    assert "firmware: qtestbed-simfw 1.0" in done.stdout
    assert "tampered (one count changed): refused" in done.stdout
    assert "tampered (signature bit flipped): refused" in done.stdout
    assert bundle.exists()


def test_sampler_sweep_in_a_session(profile: Path) -> None:
    done = example("sampler_sweep.py", "--profile", str(profile), "--points", "5")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "session " in done.stdout
    assert "open on sim-open" in done.stdout
    assert "5 angles x 400 shots, receipts verified" in done.stdout
    assert "session ran 5 jobs and is closed" in done.stdout
    assert ": ok" in done.stdout
