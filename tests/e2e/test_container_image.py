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
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from qtestbed.testing import eventually
from tests.e2e import kube_pods
from tests.e2e.console import qtestbed

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
KUBE = REPO / "deploy" / "kubernetes"
LINK_ADDRESS = "tcp://qtestbed-broker.qtestbed.svc:5555"  # generate.py's, for drivers
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
    candidates = (wanted,) if wanted else BASES
    present = [i for i in candidates if podman("image", "exists", i).returncode == 0]
    if not present:
        pytest.skip(f"no base image present ({' or '.join(BASES)}): see deploy/container/")
    # An engine may be installed where the kernel or sandbox lets it run nothing (cgroups,
    # rlimits): that is no engine either, and the reason is worth printing.
    tried = podman("run", "--rm", "--network", "none", present[0], "true")
    if tried.returncode != 0:
        pytest.skip(f"podman cannot run a container here: {tried.stderr.strip()[-300:]}")
    return present[0]


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
    for name in started:  # in order: a container sharing another's network goes first
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


@pytest.fixture
def pod(names: list[str]) -> Iterator[str]:
    name = f"qtestbed-pod-{uuid.uuid4().hex[:8]}"
    assert podman("pod", "create", "--name", name).returncode == 0
    yield name
    for container in names:
        podman("rm", "--force", "--time", "5", container)
    names.clear()
    podman("pod", "rm", "--force", name)


@pytest.mark.timeout(900)
def test_the_manifests_pods_run_from_the_image(
    image: str, facility: Path, pod: str, names: list[str], tmp_path: Path
) -> None:
    """The broker and driver Deployments, laid out as the kubelet would from the shipped
    manifests and `generate.py facility`, start and pass their probes; the keys reach each
    process only through its init container's owner-only copies."""
    pgpass = tmp_path / "pgpass"
    pgpass.write_text("*:*:*:qtestbed:unused\n")
    generated = subprocess.run(
        [sys.executable, str(KUBE / "generate.py"), "facility", str(facility), "--pgpass",
         str(pgpass)], capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    objects = {
        (d["kind"], d["metadata"]["name"]): d.get("data") or d["stringData"]
        for path in (KUBE / "broker-config.yaml",)
        for d in [*yaml.safe_load_all(generated), *yaml.safe_load_all(path.read_text())]
        if d and d["kind"] in ("ConfigMap", "Secret")
    }
    # One pod for both (one network namespace), and SQLite in the broker's /tmp: the store URL
    # and the link address are the only settings changed from what the manifests ship.
    config = objects[("ConfigMap", "qtestbed-broker")]
    config["broker.toml"] = re.sub(
        r'(?m)^store = ".*"$', 'store = "sqlite:////tmp/broker.db"', config["broker.toml"]
    )
    driver = objects[("ConfigMap", "qtestbed-driver-sim-open")]
    driver["driver.toml"] = driver["driver.toml"].replace(LINK_ADDRESS, "tcp://127.0.0.1:5555")
    for manifest in ("broker-deployment.yaml", "driver-deployment.yaml"):
        [deployment] = yaml.safe_load_all((KUBE / manifest).read_text())
        spec = deployment["spec"]["template"]["spec"]
        laid = kube_pods.lay_out(spec, objects, tmp_path / deployment["metadata"]["name"])
        names.extend(kube_pods.run(pod, laid, image, UID))
    broker, driver_name = names
    keys = tmp_path / "qtestbed-broker" / "keys"
    assert sorted((p.name, p.stat().st_mode & 0o777, p.stat().st_uid) for p in keys.iterdir()) == [
        ("broker.key", 0o600, UID), ("broker.key_secret", 0o600, UID), ("pgpass", 0o600, UID),
    ]  # fmt: skip

    def probe(name: str, *args: str) -> bool:
        return podman("exec", name, "qtestbed", "probe", *args).returncode == 0

    eventually(lambda: probe(broker, "broker"), timeout=120, every=1, what="the broker's probe")
    status = ("--status-file", "/tmp/driver-status.json", "--attested")
    eventually(lambda: probe(driver_name, "driver", *status), timeout=120, every=1,
               what="the driver's readiness probe")  # fmt: skip
