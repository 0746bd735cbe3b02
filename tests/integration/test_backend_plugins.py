"""A third-party backend plugin (tests/fixtures/backend_plugin, installed into the environment
by `make setup` with its own entry point) serves jobs through a real broker and a real driver
process with no change to qtestbed; a fault of its hardware reaches the researcher as FAILED
with its message; a plugin written for another API version is refused when the driver starts.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from qtestbed.facility_devices import add_device
from qtestbed.testing import LocalFacility, eventually
from qtestbed.v1 import jobs_pb2

LOGIC = """backend = "fixture_logic"
[device]
device_id = "logic-1"
[backend_settings]
num_qubits = 4
fault_after_shots = 500
"""
# x on q0, then cx q0->q2: bits 0 and 2 set; ccx(0, 1, 3) does nothing (q1 is 0).
CIRCUIT = b"""OPENQASM 2.0;
include "qelib1.inc";
qreg q[4];
creg c[4];
x q[0];
cx q[0],q[2];
ccx q[0],q[1],q[3];
measure q -> c;
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFacility]:
    root = tmp_path_factory.mktemp("plugins") / "facility"
    with LocalFacility(root, timing={"max_attempts": 2}) as facility:
        add_device(root, facility.offline_ca, device_id="logic-1", tier="open", driver_tables=LOGIC)
        facility.start_broker()
        facility.start_driver("logic-1")
        facility.wait_available(facility.client("alice"), "logic-1")
        yield facility


def finished(lab: LocalFacility, job_id: str) -> jobs_pb2.Job:
    client = lab.client("alice")
    terminal = (jobs_pb2.JOB_STATE_COMPLETED, jobs_pb2.JOB_STATE_FAILED)

    def done() -> jobs_pb2.Job | None:
        job = client.get_job(job_id)
        return job if job.state in terminal else None

    return eventually(done, timeout=60, what=f"job {job_id} to finish")


def test_a_third_party_plugin_is_discovered_and_serves_a_job(lab: LocalFacility) -> None:
    alice = lab.client("alice")
    device = alice.device("logic-1")
    assert device.backend == "fixture_logic"
    assert sorted(device.basis_gates) == ["ccx", "cx", "x"]
    job_id = alice.submit(CIRCUIT, device_id="logic-1", shots=100).job.job_id
    job = finished(lab, job_id)
    assert job.state == jobs_pb2.JOB_STATE_COMPLETED, job.reason
    result = alice.result(job_id)
    assert dict(result.counts) == {"0101": 100}
    assert alice.verify_result(result, job) == []  # receipt signed by the device key


def test_a_plugin_fault_reaches_the_researcher_as_failed_with_its_message(
    lab: LocalFacility,
) -> None:
    alice = lab.client("alice")
    job_id = alice.submit(CIRCUIT, device_id="logic-1", shots=501).job.job_id
    job = finished(lab, job_id)
    assert job.state == jobs_pb2.JOB_STATE_FAILED
    assert "logic board fault: shot counter overflow after 501 shots" in job.reason
    # The driver survived its backend's fault: the next job runs.
    again = alice.submit(CIRCUIT, device_id="logic-1", shots=10).job.job_id
    assert finished(lab, again).state == jobs_pb2.JOB_STATE_COMPLETED


@pytest.mark.parametrize(
    ("backend", "said"),
    [
        # A plugin written for another API version.
        ("fixture_old_api", ["written for backend API version 0", "this driver speaks version 1"]),
        # A name no installed package registers: the installed ones are named.
        (
            "no_such_device",
            [
                "no backend plugin named 'no_such_device' is installed",
                "fixture_logic",
                "aer_noisy",
            ],
        ),
    ],
)
def test_a_backend_the_driver_cannot_use_is_refused_at_start_saying_why(
    lab: LocalFacility, backend: str, said: list[str]
) -> None:
    text = (lab.root / "drivers" / "logic-1.toml").read_text()
    config = lab.root / "drivers" / f"logic-{backend}.toml"
    config.write_text(text.replace('backend = "fixture_logic"', f'backend = "{backend}"'))
    done = subprocess.run(
        [sys.executable, "-m", "qtestbed", "driver", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    for words in said:
        assert words in done.stderr
