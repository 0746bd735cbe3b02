"""The container image, where a container engine runs (podman): it builds from
deploy/container/Containerfile, and a broker and a driver started from it as Kubernetes starts
them (uid 10001, read-only root filesystem, every capability dropped, a tmpfs at /tmp, settings
and keys mounted read-only) answer their health checks: the image's own HEALTHCHECK (gRPC health
on the broker's plaintext health port) and `qtestbed probe driver --attested` for the driver.

Skipped where no engine runs or no base image is present (this machine reaches no container
registry: `deploy/container/debian-base.sh` makes one from Debian's packages; QTESTBED_TEST_BASE
names another).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from qtestbed.testing import eventually
from tests.e2e.console import qtestbed

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
BASES = ("localhost/qtestbed-base:bookworm", "docker.io/library/python:3.11-slim-bookworm")
IMAGE = "localhost/qtestbed:test"
UID = 10001
HARDENED = ("--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
            "--user", f"{UID}:{UID}", "--tmpfs", "/tmp:rw,size=64m")  # fmt: skip


def podman(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def base() -> str:
    if shutil.which("podman") is None or podman("info").returncode != 0:
        pytest.skip("no container engine runs here (podman)")
    wanted = os.environ.get("QTESTBED_TEST_BASE")
    for image in (wanted,) if wanted else BASES:
        if podman("image", "exists", image).returncode == 0:
            return image
    pytest.skip(f"no base image present ({' or '.join(BASES)}): see deploy/container/")


@pytest.fixture(scope="module")
def image(base: str) -> str:
    cert = os.environ.get("PIP_CERT")  # a build behind a TLS-intercepting proxy
    trust = ["-v", f"{cert}:{cert}:ro", "--build-arg", f"PIP_CERT={cert}"] if cert else []
    done = podman(
        "build", "--format", "docker", "--network", "host", *trust,
        "--build-arg", f"BASE_IMAGE={base}", "-f", "deploy/container/Containerfile",
        "-t", IMAGE, str(REPO), timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return IMAGE


@pytest.fixture
def facility(tmp_path: Path) -> Path:
    """A facility owned by the image's user, as a Secret mounted with its fsGroup would be."""
    root = tmp_path / "fac"
    assert qtestbed("init", str(root)).returncode == 0
    (tmp_path / "data").mkdir()
    for folder in (root, tmp_path / "data"):
        for path in (folder, *folder.rglob("*")):
            os.chown(path, UID, UID)
    return root


@pytest.fixture
def names() -> Iterator[list[str]]:
    started: list[str] = []
    yield started
    for name in reversed(started):
        podman("rm", "--force", "--time", "5", name)


def healthy(name: str) -> bool:
    return podman("healthcheck", "run", name).returncode == 0


# A build after pyproject.toml changed installs every dependency again (a few minutes).
@pytest.mark.timeout(900)
def test_the_image_runs_broker_and_driver_hardened_and_healthy(
    image: str, facility: Path, names: list[str]
) -> None:
    broker = f"qtestbed-broker-{uuid.uuid4().hex[:8]}"
    names.append(broker)
    started = podman(
        "run", "--detach", "--name", broker, *HARDENED,
        "-v", f"{facility}:/etc/qtestbed:ro", "-v", f"{facility.parent / 'data'}:/var/lib/qtestbed",
        "-e", "QTESTBED_STORE=sqlite:////var/lib/qtestbed/broker.db",
        "-e", "QTESTBED_LINK_LISTEN=tcp://127.0.0.1:5555", image,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    eventually(lambda: healthy(broker), timeout=120, every=1, what="the broker's health check")
    assert podman("exec", broker, "id", "-u").stdout.strip() == str(UID)
    written = podman("exec", broker, "touch", "/opt/qtestbed/x")
    assert "Read-only file system" in written.stderr

    driver = f"qtestbed-driver-{uuid.uuid4().hex[:8]}"
    names.insert(0, driver)  # removed first
    probe = '["qtestbed", "probe", "driver", "--status-file", "/tmp/status.json", "--attested"]'
    started = podman(
        "run", "--detach", "--name", driver, "--network", f"container:{broker}", *HARDENED,
        "-v", f"{facility}:/etc/qtestbed:ro", "--health-cmd", probe, image,
        "driver", "--config", "/etc/qtestbed/drivers/sim-open.toml",
        "--status-file", "/tmp/status.json",
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    eventually(lambda: healthy(driver), timeout=120, every=1, what="the driver's health check")

    baked = podman("image", "inspect", image, "--format", "{{json .Config.Healthcheck}}")
    assert "probe" in baked.stdout  # the broker's check above is the image's own HEALTHCHECK
    assert "127.0.0.1:8081" in baked.stdout
    assert podman("stop", "--time", "10", broker).returncode == 0
    assert not healthy(broker)
