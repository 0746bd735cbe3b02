"""`qtestbed driver check` end to end: it passes for every shipped backend plugin (aer,
aer_noisy, basic from driver settings as `qtestbed init` writes them; the 5-qubit Qiskit
fake-device model) and for the third-party fixture plugin installed into the venv, each
attested against reference values measured from that plugin; it fails with a clear report for
a deliberately broken driver (one whose results drift far from its attested calibration) and a
broken plugin (the fixture with its fault setting), exiting 1 and naming the check and what it
saw."""

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


# Tables for plugins `qtestbed init` does not write a driver file for.
PLUGIN_TABLES = {
    "qiskit_fake": '[device]\ndevice_id = "manila"\n[backend_settings]\nmodel = "FakeManilaV2"\n',
    "fixture_logic": '[device]\ndevice_id = "logic-1"\n[backend_settings]\nnum_qubits = 4\n',
}
CHECKS = ["attestation", "correctness", "memory", "too-large", "invalid", "heartbeats"]
CHECKS += ["cancel", "restart"]


def _settings(facility: Path, device: str, name: str, **values: object) -> Path:
    source = facility / "drivers" / f"{device}.toml"
    backend = values.pop("backend", None)
    extra = str(values.pop("extra", ""))  # more of the plugin's own settings
    text = with_top_level(source.read_text(), {**QUICK_BEATS, **values})
    if backend in PLUGIN_TABLES:
        head = text[: text.index("\n[")]  # the identity and timing, then the plugin's tables
        text = f'{head}\nbackend = "{backend}"\n{PLUGIN_TABLES[str(backend)]}{extra}'
    elif backend is not None:
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
    ("device", "backend"),
    [
        ("sim-open", None),
        ("sim-restricted", None),
        ("sim-open", "basic"),
        ("sim-open", "qiskit_fake"),
        ("sim-open", "fixture_logic"),
    ],
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
    assert [c["name"] for c in report["checks"]] == CHECKS
    detail = {c["name"]: c["detail"] for c in report["checks"]}
    assert "but device" in detail["too-large"]  # refused for the device's size
    assert not list(config.parent.glob(f".{config.stem}.check-*"))  # its copies removed


@pytest.mark.timeout(300)
def test_driver_check_fails_a_broken_driver_with_a_clear_report(facility: Path) -> None:
    config = _settings(facility, "sim-open", "broken", simulated_drift=0.45)
    done = _check(config)
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("qtestbed driver check: device sim-open, backend aer")
    [ghz] = [line for line in lines if line.lstrip().startswith("FAIL  correctness")]
    assert "GHZ-3 is wrong beyond the device's own error figures" in ghz
    assert "P(000)=" in ghz
    assert "expected the two together >=" in ghz
    assert any(line.lstrip().startswith("PASS  attestation") for line in lines)
    assert lines[-1].startswith("8 checks: ")
    assert "failed (correctness" in lines[-1]


@pytest.mark.timeout(300)
def test_driver_check_fails_a_broken_plugin_with_a_clear_report(facility: Path) -> None:
    # The fixture's board faults on any job of more than 100 shots; the short jobs still run.
    extra = "fault_after_shots = 100\n"
    config = _settings(facility, "sim-open", "faulty", backend="fixture_logic", extra=extra)
    done = _check(config)
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("qtestbed driver check: device logic-1, backend fixture_logic")
    fails = {line.split()[1]: line for line in lines if line.lstrip().startswith("FAIL")}
    assert sorted(fails) == ["correctness", "memory"]
    # The plugin's own message, as the researcher gets it after the broker's retries.
    for check, shots in (("correctness", 2000), ("memory", 200)):
        assert "job ended FAILED: " in fails[check]
        assert f"logic board fault: shot counter overflow after {shots} shots" in fails[check]
    assert lines[-1] == "8 checks: 6 passed, 2 failed (correctness, memory)"


def test_driver_check_refuses_settings_it_cannot_read(tmp_path: Path) -> None:
    config = tmp_path / "nothing.toml"
    config.write_text("firmware = \n")
    done = _check(config)
    assert done.returncode == 2  # cannot run, as every command that cannot
    assert "cannot check" in done.stderr
    assert str(config) in done.stderr
