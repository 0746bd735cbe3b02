"""A store as the previous release wrote it: that release's own code, taken from git history,
runs a facility (broker, a driver process, a researcher) that leaves jobs, results with receipts,
audit entries and signed checkpoints behind.

PREVIOUS_RELEASE is the last commit on the main line whose schema was PREVIOUS_SCHEMA; when a
migration is added, move both to the commit before it (`git log -- broker/store/schema.py`).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

PREVIOUS_RELEASE = "6ac420213cbe273c55ca78d7a0a5697aa1ec1847"
PREVIOUS_SCHEMA = 8
# The packages and the data files they read from the repository (the export-control table).
_PACKAGES = ("attestation", "broker", "drivers", "qtestbed", "deploy/policy")
REPOSITORY = Path(__file__).resolve().parents[2]

# Runs inside the previous release's code (its folder first on sys.path): three jobs run to a
# result on one device, a fourth is cancelled while queued, then everything stops cleanly
# (the broker signs a checkpoint over every entry as it stops).
_RUN = """
import sys
from pathlib import Path
from qtestbed.testing import LocalFacility

root, store = Path(sys.argv[1]), sys.argv[2] or None
GHZ = (b'OPENQASM 2.0; include "qelib1.inc"; qreg q[2]; creg c[2];'
       b" h q[0]; cx q[0],q[1]; measure q -> c;")
with LocalFacility(root, store=store) as fac:
    fac.start_broker()
    alice = fac.client("alice")
    queued = alice.submit(GHZ, device_id="sim-open", shots=64).job.job_id
    alice.cancel(queued, reason="changed my mind")
    fac.start_driver("sim-open")
    jobs = [alice.submit(GHZ, device_id="sim-open", shots=100 + i).job.job_id for i in range(3)]
    for job_id in jobs:
        for job in alice.watch(job_id, timeout=60):
            if job.state == 4:  # COMPLETED
                break
        else:
            raise SystemExit(f"job {job_id} did not succeed")
    print(" ".join(jobs), flush=True)
"""


def checkout(dest: Path) -> Path:
    """The previous release's packages under `dest` (git archive of PREVIOUS_RELEASE)."""
    archive = subprocess.run(
        ["git", "-C", str(REPOSITORY), "archive", "--format=tar", PREVIOUS_RELEASE, *_PACKAGES],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(dest, filter="data")
    return dest


def have_history() -> bool:
    """Whether this checkout holds the previous release (a shallow clone may not)."""
    found = subprocess.run(
        ["git", "-C", str(REPOSITORY), "cat-file", "-e", f"{PREVIOUS_RELEASE}^{{commit}}"],
        capture_output=True,
        check=False,
    )
    return found.returncode == 0


def make_facility(code: Path, root: Path, store: str) -> list[str]:
    """Run the previous release's facility in `root` on `store` ("" for broker.toml's own
    SQLite file); the ids of the jobs that ran to a result."""
    env = {**os.environ, "PYTHONPATH": str(code), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-c", _RUN, str(root), store]
    done = subprocess.run(cmd, cwd=code, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.split()
