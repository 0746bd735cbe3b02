"""The shipped Prometheus configuration reaches the broker's /metrics as shipped: its TLS files
are the ones `qtestbed init` writes where the systemd unit runs the facility, they name the
scraper identity and the broker's certificate, promtool accepts it in full against such a
facility, and a real Prometheus server scrapes a live broker with it, without one refusal."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from attestation.clients import verify_client_certificate
from attestation.keys import VerifyKey, load_private_key
from broker.access.credentials import principal_named
from broker.access.facility import load_facility
from broker.settings import load_settings
from qtestbed.facility_init import init_facility
from qtestbed.testing import LocalFacility, eventually
from tests.e2e.test_prometheus import find_promtool, run
from tests.integration.support import metric_value

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS = REPO / "deploy" / "prometheus"
CONFIG = PROMETHEUS / "prometheus.yml"
UNIT = REPO / "deploy" / "systemd" / "qtestbed-broker.service"
INSTALL = "deploy/prometheus/install-promtool.sh .venv/bin"
TLS_FILES = ("ca_file", "cert_file", "key_file")


def shipped() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(CONFIG.read_text())
    return config


def broker_job(config: dict[str, Any]) -> dict[str, Any]:
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "qtestbed-broker"]
    return dict(job)


def facility_folder() -> Path:
    """Where the shipped systemd unit runs the broker's facility (its --config's folder)."""
    found = re.search(r"--config (\S+)", UNIT.read_text())
    assert found is not None, f"{UNIT.name} names no --config"
    return Path(found.group(1)).parent


def rewritten(config: dict[str, Any], facility: Path, *, target: str | None = None) -> str:
    """The shipped config for a facility in `facility` instead of the unit's folder."""
    job = broker_job(config)
    installed = facility_folder()
    for key in TLS_FILES:
        job["tls_config"][key] = str(facility / Path(job["tls_config"][key]).relative_to(installed))
    if target is not None:
        job["static_configs"] = [{"targets": [target]}]
        job["scrape_interval"] = "1s"
    return yaml.safe_dump({**config, "scrape_configs": [job]})


def beside_python(name: str) -> str | None:
    beside = Path(sys.executable).parent / name  # .venv/bin, where the set-up puts it
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(name)


def required(name: str, found: str | None) -> str:
    if found is None:
        message = f"{name} is neither next to {sys.executable} nor on PATH; run `{INSTALL}`"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


@pytest.fixture(scope="module")
def initialised(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return init_facility(tmp_path_factory.mktemp("init") / "qtestbed")


def test_the_shipped_config_names_what_init_writes_where_the_unit_runs_it(
    initialised: Path,
) -> None:
    job = broker_job(shipped())
    tls = job["tls_config"]
    assert job["scheme"] == "https"
    assert job["metrics_path"] == "/metrics"
    installed = facility_folder()
    files = {key: initialised / Path(tls[key]).relative_to(installed) for key in TLS_FILES}
    assert all(path.is_file() for path in files.values()), files

    # ca_file is the root that signed the broker's certificate, which names server_name.
    root = x509.load_pem_x509_certificate(files["ca_file"].read_bytes())
    settings = load_settings(initialised / "broker.toml", {})
    assert files["ca_file"] == settings.ca_cert
    broker = x509.load_pem_x509_certificate(settings.server_cert.read_bytes())
    broker.verify_directly_issued_by(root)
    names = broker.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert tls["server_name"] in names.get_values_for_type(x509.DNSName)

    # cert_file/key_file are a pair, from the client-issuing CA, naming a principal whose only
    # role is scraper.
    client_ca = x509.load_pem_x509_certificate(settings.client_ca_cert.read_bytes())
    leaf = x509.load_pem_x509_certificate(files["cert_file"].read_bytes())
    verified = verify_client_certificate(
        leaf.public_bytes(serialization.Encoding.PEM), client_ca, now=leaf.not_valid_before_utc
    )
    facility = load_facility(settings.facility)
    name = principal_named(verified.uris, facility.facility_id)
    assert name is not None, verified.uris
    assert {r.value for r in facility.principals[name].roles} == {"scraper"}
    key = load_private_key(files["key_file"])  # also refuses a key others can read
    assert key.public_key == VerifyKey.from_cryptography(leaf.public_key())

    (targets,) = [c["targets"] for c in job["static_configs"]]
    assert targets == [settings.metrics_listen]


def test_promtool_checks_the_shipped_config(initialised: Path, tmp_path: Path) -> None:
    promtool = required("promtool", find_promtool())
    done = run(promtool, "check", "config", "--syntax-only", str(CONFIG), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    # In full (TLS files opened, rule files loaded) against a facility init wrote, from another
    # folder: the rules resolve relative to the config.
    folder = tmp_path / "prometheus"
    shutil.copytree(PROMETHEUS / "rules", folder / "rules")
    (folder / "prometheus.yml").write_text(rewritten(shipped(), initialised))
    done = run(promtool, "check", "config", str(folder / "prometheus.yml"), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "qtestbed-alerts.yml" in done.stdout, done.stdout


# ------------------------------------------------------------------ a real Prometheus


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[LocalFacility]:
    with LocalFacility(tmp_path / "facility") as fac:
        fac.start_broker_process()
        yield fac


def _api(base: str, path: str, **params: str) -> Any:
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    with urllib.request.urlopen(f"{base}{path}{query}", timeout=10) as response:  # noqa: S310 - our own loopback Prometheus
        return json.loads(response.read())["data"]


def _ready(base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/-/ready", timeout=10) as response:  # noqa: S310 - our own loopback Prometheus
            return bool(response.status == 200)
    except urllib.error.HTTPError:  # 503 while its storage starts
        return False


def _listening(log: Path, server: subprocess.Popen[bytes]) -> str | None:
    if server.poll() is not None:
        raise RuntimeError(f"prometheus exited ({server.returncode}): {log.read_text()[-2000:]}")
    found = re.search(r'msg="Listening on" address=(127\.0\.0\.1:[1-9]\d*)', log.read_text())
    return found.group(1) if found else None


def test_a_real_prometheus_scrapes_a_live_broker_with_the_shipped_config(
    broker: LocalFacility, tmp_path: Path
) -> None:
    prometheus = required("prometheus", beside_python("prometheus"))
    assert broker.addresses is not None
    url = urllib.parse.urlsplit(broker.addresses.metrics)
    assert url.scheme == "https"
    folder = tmp_path / "prometheus"
    shutil.copytree(PROMETHEUS / "rules", folder / "rules")
    config = folder / "prometheus.yml"
    config.write_text(rewritten(shipped(), broker.root, target=url.netloc))
    log = folder / "prometheus.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(
            [
                prometheus,
                f"--config.file={config}",
                f"--storage.tsdb.path={folder / 'data'}",
                "--web.listen-address=127.0.0.1:0",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
    try:
        address = eventually(lambda: _listening(log, server), what="prometheus to listen")
        base = f"http://{address}"
        eventually(lambda: _ready(base), what="prometheus to be ready")

        def scraped() -> dict[str, Any] | None:
            targets: list[dict[str, Any]] = _api(base, "/api/v1/targets")["activeTargets"]
            assert len(targets) <= 1, targets
            return targets[0] if targets and targets[0]["health"] == "up" else None

        target = eventually(scraped, timeout=60, what="prometheus to scrape the broker")
        assert target["scrapeUrl"] == broker.addresses.metrics
        assert target["lastError"] == ""

        def queried() -> list[Any] | None:
            found: list[Any] = _api(base, "/api/v1/query", query="qtestbed_devices")["result"]
            return found or None

        series = eventually(queried, timeout=30, what="broker metrics in prometheus")
        assert {s["metric"]["job"] for s in series} == {"qtestbed-broker"}
        # Every one of its scrapes so far was let in: the broker refused nothing (asked while
        # Prometheus runs: stopping it may cut a scrape halfway, which is a refusal).
        text = broker.scrape()
        assert metric_value(text, "qtestbed_front_door_refusals_total") == 0
        assert "qtestbed_front_door_refusals_total{" not in text
    finally:
        server.terminate()
        server.wait(30)
