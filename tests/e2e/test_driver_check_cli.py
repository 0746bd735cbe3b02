"""`qtestbed driver check` end to end: it passes for every shipped backend (aer, aer_noisy,
basic), each run from driver settings as `qtestbed init` writes them, and fails with a clear
report for a deliberately broken driver (one whose results drift far from its attested
calibration), exiting 1 and naming the check and what it saw."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from qtestbed.driver_check_setup import with_top_level
from qtestbed.facility_init import init_facility

# Quick heartbeats keep the long-run checks short (each runs just past the window).
QUICK_BEATS = {"heartbeat_seconds": 0.3, "heartbeat_misses": 4}


@pytest.fixture(scope="module")
def facility(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return init_facility(tmp_path_factory.mktemp("check") / "fac")


def _settings(facility: Path, device: str, name: str, **values: object) -> Path:
    source = facility / "drivers" / f"{device}.toml"
    backend = values.pop("backend", None)
    text = with_top_level(source.read_text(), {**QUICK_BEATS, **values})
    if backend is not None:
        text = text.replace('backend = "aer"', f'backend = "{backend}"')
    path = source.with_name(f"{name}.toml")
    path.write_text(text)
    return path


def _check(config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qtestbed", "driver", "check", "--config", str(config), *extra],
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("device", "backend"), [("sim-open", None), ("sim-restricted", None), ("sim-open", "basic")]
)
def test_driver_check_passes_for_every_shipped_backend(
    facility: Path, device: str, backend: str | None
) -> None:
    extra = {"backend": backend} if backend else {}
    config = _settings(facility, device, f"check-{device}-{backend or 'own'}", **extra)
    done = _check(config, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["passed"] is True
    assert report["backend"] == (backend or ("aer" if device == "sim-open" else "aer_noisy"))
    names = [c["name"] for c in report["checks"]]
    assert names == [
        "attestation",
        "ghz",
        "memory",
        "too-large",
        "invalid",
        "heartbeats",
        "cancel",
        "restart",
    ]
    assert not list(config.parent.glob(f".{config.stem}.check-*"))  # its copies removed


@pytest.mark.timeout(300)
def test_driver_check_fails_a_broken_driver_with_a_clear_report(facility: Path) -> None:
    config = _settings(facility, "sim-open", "broken", simulated_drift=0.45)
    done = _check(config)
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("qtestbed driver check: device sim-open, backend aer")
    [ghz] = [line for line in lines if line.lstrip().startswith("FAIL  ghz")]
    assert "wrong beyond the device's own error figures" in ghz
    assert "P(000)=" in ghz
    assert "expected the two together >=" in ghz
    assert any(line.lstrip().startswith("PASS  attestation") for line in lines)
    assert lines[-1].startswith("8 checks: ")
    assert "failed (ghz" in lines[-1]


def test_driver_check_refuses_settings_it_cannot_read(tmp_path: Path) -> None:
    config = tmp_path / "nothing.toml"
    config.write_text("firmware = \n")
    done = _check(config)
    assert done.returncode == 2  # cannot run, as every command that cannot
    assert "cannot check" in done.stderr
    assert str(config) in done.stderr
