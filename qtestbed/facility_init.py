"""`qtestbed init DIR`: a self-contained facility, ready to run.

Writes a CA, the broker's TLS identity, researcher credentials at two tiers plus an operator,
two simulated testbeds with Ed25519 attestation keys and certificates, the facility registry
with reference values measured from this installation, and broker/driver/client settings.

The CA private keys (root, client-issuing, device-issuing) never go into DIR: they are written
to a folder of their own (`DIR-offline-ca` beside it unless told otherwise), with the CA
certificates that `credential issue --ca-dir` needs beside them, for the operator to take
offline. The broker needs none of them and refuses to start where one is readable.

`init` runs broker and driver code on this machine (the shipped policies and band table, the
driver build measurement), so it imports them inside the functions that need them: importing
the client package never loads the broker or a driver.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from attestation.keys import KeyKind, SigningKey, create_private_key_file
from attestation.pki import (
    cert_to_pem,
    create_ca,
    create_intermediate,
    device_uri,
    issue_certificate,
)
from attestation.secretfile import private_folder, write_public
from qtestbed.offline_ca import check_outside, default_offline_ca
from qtestbed.server_names import split_names
from qtestbed.shared.identity import principal_uri
from qtestbed.shared.linkkeys import authorize_client, create_keypair

if TYPE_CHECKING:
    from drivers.device import DeviceDescription

TIERS = ("open", "controlled", "restricted")
FACILITY_ID = "demo"
FIRMWARE = "qtestbed-simfw 1.0"


_FOLDERS = ("", "ca", "broker", "users", "devices", "drivers", "link", "link/clients", "policy")


@dataclass(frozen=True, kw_only=True, slots=True)
class PersonSpec:
    name: str
    tier: str
    roles: tuple[str, ...]
    project: str
    affiliation: str


PEOPLE = (
    PersonSpec(
        name="alice",
        tier="open",
        roles=("researcher",),
        project="open-science",
        affiliation="University of Example",
    ),
    PersonSpec(
        name="bob",
        tier="restricted",
        roles=("researcher",),
        project="quantum-sensing",
        affiliation="National Lab of Example",
    ),
    PersonSpec(
        name="olivia",
        tier="restricted",
        roles=("operator", "researcher"),
        project="facility-ops",
        affiliation="qtestbed facility",
    ),
    PersonSpec(
        name="sam",
        tier="open",
        roles=("security",),
        project="facility-ops",
        affiliation="qtestbed facility",
    ),
    # A second security officer: break-glass access needs two.
    PersonSpec(
        name="sean",
        tier="open",
        roles=("security",),
        project="facility-ops",
        affiliation="qtestbed facility",
    ),
    # Approves other principals' access requests (just-in-time elevations).
    PersonSpec(
        name="petra",
        tier="open",
        roles=("approver",),
        project="facility-ops",
        affiliation="qtestbed facility",
    ),
    # The monitoring system's identity: it may read /metrics and nothing else.
    PersonSpec(
        name="prometheus",
        tier="open",
        roles=("scraper",),
        project="facility-ops",
        affiliation="qtestbed facility",
    ),
)


def _line(n: int) -> tuple[tuple[int, int], ...]:
    return tuple(edge for i in range(n - 1) for edge in ((i, i + 1), (i + 1, i)))


def demo_devices() -> tuple[tuple[str, DeviceDescription], ...]:
    """The two simulated testbeds of a new facility, with their tiers."""
    from drivers.device import DeviceDescription

    return (
        (
            "open",
            DeviceDescription(
                device_id="sim-open",
                num_qubits=5,
                basis_gates=("cx", "id", "rz", "sx", "x"),
                coupling_map=_line(5),
                backend="aer",
            ),
        ),
        (
            "restricted",
            DeviceDescription(
                device_id="sim-restricted",
                num_qubits=6,
                basis_gates=("cx", "id", "rz", "sx", "x"),
                coupling_map=_line(6),
                backend="aer_noisy",
                one_qubit_error=0.001,
                two_qubit_error=0.01,
                readout_error=0.01,
                # Physics of a typical superconducting transmon, so T1/T2 experiments
                # recover these figures.
                t1_us=100.0,
                t2_us=80.0,
                one_qubit_gate_ns=35.0,
                two_qubit_gate_ns=300.0,
            ),
        ),
    )


class Writer:
    """Writes files under the facility folder, refusing to overwrite an existing facility;
    CA keys (and copies of the CA certificates) go to the offline folder instead."""

    def __init__(self, root: Path, offline: Path) -> None:
        self.root = root
        self.offline = offline

    def text(self, rel: str, content: str) -> Path:
        return _write_public(self.root / rel, content)

    def key(self, rel: str, key: SigningKey) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        create_private_key_file(key, path)

    def ca(self, name: str, key: SigningKey, cert: x509.Certificate) -> None:
        """A CA: its certificate in DIR/ca/, its key and a copy of the certificate offline."""
        pem = cert_to_pem(cert).decode()
        self.text(f"ca/{name}.pem", pem)
        create_private_key_file(key, private_folder(self.offline) / f"{name}.key")
        _write_public(self.offline / f"{name}.pem", pem)


def _write_public(path: Path, content: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_public(path, content.encode())
    return path


class Issuer:
    """A CA of the facility, issuing certificates that start `when` and last a year. An issuing
    (intermediate) CA appends its own certificate, so a peer can build the chain to the root."""

    def __init__(
        self, key: SigningKey, cert: x509.Certificate, when: dt.datetime, *, intermediate: bool
    ) -> None:
        self.key, self.cert, self.when = key, cert, when
        self.intermediate = intermediate

    def issue(
        self,
        cn: str,
        subject: SigningKey,
        *,
        server: bool = False,
        client: bool = False,
        uris: Sequence[str] = (),
        names: Sequence[str] = (),
    ) -> str:
        """A certificate for `cn`; a server's names localhost, 127.0.0.1 and `names` (DNS
        names or IP addresses)."""
        dns, ips = split_names(["localhost", "127.0.0.1", *names]) if server else ([], [])
        cert = issue_certificate(
            ca_key=self.key,
            ca_cert=self.cert,
            subject_cn=cn,
            public_key=subject.public_key,
            now=self.when,
            days=365,
            server=server,
            client=client,
            dns_names=dns,
            ip_addresses=ips,
            uris=uris,
        )
        chain = cert_to_pem(cert) + (cert_to_pem(self.cert) if self.intermediate else b"")
        return chain.decode()

    def issuing_ca(
        self, out: Writer, name: str, common_name: str, usage: Sequence[x509.ObjectIdentifier]
    ) -> Issuer:
        """A CA below this root that may issue end-entity certificates only (path length 0)."""
        key = SigningKey.generate(KeyKind.ECDSA_P256)
        cert = create_intermediate(
            common_name,
            key,
            parent_key=self.key,
            parent_cert=self.cert,
            now=self.when,
            days=3650,
            extended_key_usage=usage,
        )
        out.ca(name, key, cert)
        return Issuer(key, cert, self.when, intermediate=True)


def init_facility(
    root: Path,
    *,
    grpc_port: int = 50051,
    link_port: int = 5555,
    metrics_port: int = 9464,
    now: dt.datetime | None = None,
    offline_ca: Path | None = None,
    devices: Sequence[tuple[str, DeviceDescription]] | None = None,
    firmware: str = FIRMWARE,
    broker_names: Sequence[str] = (),
) -> Path:
    """Create the facility in `root` (which must be empty or absent) and its CA keys in
    `offline_ca` (default `default_offline_ca(root)`, also empty or absent, and never inside
    `root`); returns the facility folder. `devices` (tier, description) replace the two demo
    testbeds, all running `firmware` (`qtestbed driver check` makes a facility for the one
    device it checks). The broker's certificate names localhost, 127.0.0.1 and `broker_names`
    (the names clients and drivers reach it by: a Kubernetes Service's, a host's)."""
    split_names(broker_names)  # a bad name is refused before anything is written
    offline = offline_ca or default_offline_ca(root)
    for folder in (root, offline):
        if folder.exists() and any(folder.iterdir()):
            raise FileExistsError(f"{folder} is not empty; choose a new folder for the facility")
    check_outside(root, offline)
    out = Writer(root, offline)
    # Folders made up front with an explicit mode: under a permissive umask, a folder others
    # can write (link/clients/ above all: it says who may connect) would let them add files.
    root.parent.mkdir(parents=True, exist_ok=True)
    for rel in _FOLDERS:
        (root / rel).mkdir(mode=0o755, exist_ok=True)
    ca = _write_ca(out, now or dt.datetime.now(dt.UTC))
    # Two issuing CAs, so that whoever holds one cannot act as the other: principals' and
    # services' certificates come only from the first, devices' only from the second.
    clients = ca.issuing_ca(
        out, "clients-ca", "qtestbed demo clients CA", [ExtendedKeyUsageOID.CLIENT_AUTH]
    )
    issuer = ca.issuing_ca(out, "devices-ca", "qtestbed demo devices CA", [])
    broker_key = SigningKey.generate(KeyKind.ECDSA_P256)
    out.key("broker/broker.key", broker_key)
    out.text(
        "broker/broker.pem",
        ca.issue("qtestbed-broker", broker_key, server=True, names=broker_names),
    )
    for person in PEOPLE:
        key = SigningKey.generate(KeyKind.ECDSA_P256)
        uri = principal_uri(FACILITY_ID, person.name)
        out.key(f"users/{person.name}.key", key)
        out.text(
            f"users/{person.name}.pem", clients.issue(person.name, key, client=True, uris=[uri])
        )
        out.text(f"users/{person.name}.toml", _client_toml(grpc_port, person.name))
    create_keypair(root / "link", "broker")
    (root / "link" / "clients").mkdir(parents=True, exist_ok=True)
    device_entries = [
        _write_device(out, issuer, tier, desc, link_port, firmware)
        for tier, desc in (demo_devices() if devices is None else devices)
    ]
    out.text("facility.toml", _facility_toml(device_entries, now or dt.datetime.now(dt.UTC)))
    # The facility keeps its own copy of the export band table, so an operator can review and
    # amend it (e.g. once the unverified bands are confirmed) without touching the install.
    from broker.policy.engine import DEFAULT_POLICIES
    from broker.policy.export_control import DEFAULT_PROFILE

    out.text("policy/export-control.toml", DEFAULT_PROFILE.read_text())
    out.text("policy/policies.cedar", DEFAULT_POLICIES.read_text())
    out.text("broker.toml", _broker_toml(grpc_port, link_port, metrics_port))
    return root


def _write_ca(out: Writer, now: dt.datetime) -> Issuer:
    # Certificates start a little in the past so a peer whose clock lags slightly accepts them.
    when = now - dt.timedelta(minutes=5)
    key = SigningKey.generate(KeyKind.ECDSA_P256)
    # Path length 1: the facility may delegate device issuance to an intermediate CA.
    cert = create_ca("qtestbed facility root", key, now=when, days=3650, path_length=1)
    out.ca("ca", key, cert)
    return Issuer(key, cert, when, intermediate=False)


def _write_device(
    out: Writer, ca: Issuer, tier: str, desc: DeviceDescription, link_port: int, firmware: str
) -> str:
    key = SigningKey.generate(KeyKind.ED25519)
    out.key(f"devices/{desc.device_id}.key", key)
    pem = ca.issue(desc.device_id, key, uris=[device_uri(desc.device_id)])
    out.text(f"devices/{desc.device_id}.pem", pem)
    out.text(f"drivers/{desc.device_id}.toml", _driver_toml(link_port, desc, firmware))
    public, _secret = create_keypair(out.root / "drivers", f"{desc.device_id}-link")
    authorize_client(public, out.root / "link" / "clients", device_id=desc.device_id)
    return _device_toml(tier, desc, firmware)


def _client_toml(grpc_port: int, name: str) -> str:
    return (
        f"# Client profile for {name}: qtestbed --profile users/{name}.toml ...\n"
        f'broker = "127.0.0.1:{grpc_port}"\n'
        'ca_cert = "../ca/ca.pem"\n'
        f'cert = "{name}.pem"\n'
        f'key = "{name}.key"\n'
    )


def _toml_list(items: Iterable[object]) -> str:
    return "[" + ", ".join(json.dumps(str(i)) for i in items) + "]"


def _driver_toml(link_port: int, desc: DeviceDescription, firmware: str) -> str:
    lines = [
        f"# Driver agent: qtestbed driver --config drivers/{desc.device_id}.toml",
        f'broker = "tcp://127.0.0.1:{link_port}"',
        '# Replicas on PostgreSQL: broker = ["tcp://a:5555", "tcp://b:5555"] (tried in turn)',
        f'device_key = "../devices/{desc.device_id}.key"',
        f'device_certificate = "../devices/{desc.device_id}.pem"',
        f'link_secret_key = "{desc.device_id}-link.key_secret"',
        'broker_link_key = "../link/broker.key"',
        f"firmware = {json.dumps(firmware)}",
        "heartbeat_seconds = 1.0",
        "",
        "[device]",
    ]
    for key, value in desc.as_dict().items():
        if value is None:
            continue
        if isinstance(value, str):
            lines.append(f'{key} = "{value}"')
        elif key == "coupling_map":
            lines.append(f"{key} = [" + ", ".join(f"[{a}, {b}]" for a, b in value) + "]")
        elif isinstance(value, list | tuple):
            lines.append(f"{key} = {_toml_list(value)}")
        else:
            lines.append(f"{key} = {value}")
    return "\n".join(lines) + "\n"


def _device_toml(tier: str, desc: DeviceDescription, firmware: str) -> str:
    from drivers.measure import measure

    m = measure(desc, firmware)
    return "\n".join(
        [
            "[[devices]]",
            f'device_id = "{desc.device_id}"',
            f'tier = "{tier}"',
            f'model = "qtestbed-sim-{desc.backend}"',
            f'certificate = "devices/{desc.device_id}.pem"',
            "[devices.reference]",
            f"firmware = {_toml_list([m.firmware])}",
            f"control_software = {_toml_list([m.control_software])}",
            f"driver_build = {_toml_list([m.driver_build])}",
            f"calibration_digest = {_toml_list([m.calibration_digest])}",
            f"num_qubits = {m.num_qubits}",
            *_calibration_windows(desc),
            "",
        ]
    )


def calibration_windows(desc: DeviceDescription) -> dict[str, list[float]]:
    """Windows around the error figures and relaxation times the device describes (half to
    double), so a driver claiming other figures beside the same calibration digest is
    refused."""
    return {
        name: [value / 2, min(1.0, value * 2) if name.endswith("_error") else value * 2]
        for name in ("two_qubit_error", "readout_error", "t1_us", "t2_us")
        if (value := getattr(desc, name))
    }


def _calibration_windows(desc: DeviceDescription) -> list[str]:
    figures = calibration_windows(desc)
    if not figures:
        return []
    inner = ", ".join(
        f"{name} = [{', '.join(repr(float(b)) for b in bounds)}]"
        for name, bounds in figures.items()
    )
    return [f"calibration = {{ {inner} }}"]


def _principal_toml(p: PersonSpec, now: dt.datetime) -> str:
    """A principal with the attributes the Cedar policies read (see broker/policy/schema)."""
    review = (now + dt.timedelta(days=365)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return (
        f'[[principals]]\nname = "{p.name}"\ntier = "{p.tier}"\nroles = {_toml_list(p.roles)}\n'
        f'affiliation = "{p.affiliation}"\nnationality = "US"\njurisdictions = ["US"]\n'
        f'projects = ["{p.project}"]\nclearance_expires_at = {review}  # sunset: review yearly\n'
        f"[principals.training]\ndual-use-awareness = {review}\n"
    )


def _facility_toml(device_entries: list[str], now: dt.datetime) -> str:
    people = "\n".join(_principal_toml(p, now) for p in PEOPLE)
    return (
        "# Who may do what, and which devices exist. Reload with SIGHUP to the broker.\n"
        "[facility]\n"
        'name = "qtestbed demo facility"\n'
        f'id = "{FACILITY_ID}"  # names principals in certificates: qtestbed://ID/principal/NAME\n'
        f"tiers = {_toml_list(TIERS)}  # lowest to highest\n"
        'ca_cert = "ca/ca.pem"\n'
        'jurisdiction = "US"  # where the devices are, for export rules\n'
        "# Whether remote access to a controlled device counts as an export: a legal judgement.\n"
        "remote_access_is_export = true\n"
        'export_licence = "EAR-4A906"\n\n'
        f"{people}\n" + "\n".join(device_entries)
    )


def _broker_toml(grpc_port: int, link_port: int, metrics_port: int) -> str:
    return (
        'facility = "facility.toml"\n'
        'store = "sqlite:broker.db"\n'
        'ca_cert = "ca/ca.pem"\n'
        "# Principals' certificates must come from this CA; the broker needs no CA key.\n"
        'client_ca_cert = "ca/clients-ca.pem"\n'
        'server_cert = "broker/broker.pem"\n'
        'server_key = "broker/broker.key"\n'
        'link_secret_key = "link/broker.key_secret"\n'
        'link_clients = "link/clients"\n'
        'export_control_profile = "policy/export-control.toml"\n'
        'policies = "policy/policies.cedar"  # validated at start and on SIGHUP\n'
        f'listen = "127.0.0.1:{grpc_port}"\n'
        f'link_listen = "tcp://127.0.0.1:{link_port}"\n'
        f'metrics_listen = "127.0.0.1:{metrics_port}"  # https: scraper role only\n\n'
        "[server]\n"
        "workers = 1  # processes sharing the gRPC port; more than 1 needs PostgreSQL\n\n"
        "[limits]\nmax_qubits = 32\nmax_shots = 100000\n\n"
        "[decoding]  # the circuit-decoder pool; see the README (circuit validation)\n"
        "processes = 0  # decoder children; 0: one per CPU, 2 to 16\n"
        "per_principal = 0  # one principal's decodes at once; 0: half the pool, rounded up\n"
        "deadline_base_seconds = 2.0  # a payload's deadline: this plus ...\n"
        "deadline_per_kib_seconds = 0.05  # ... this per KiB (OpenQASM 3: ~0.02 s per KiB)\n"
        "retry_after_seconds = 1.0  # the retry delay given past one's share\n\n"
        "[scheduling]\n"
        "aging_seconds = 300.0  # one priority class moves a job this far ahead in its project\n"
        "session_max_seconds = 3600.0\nsession_idle_seconds = 300.0\n"
        "window_jobs = 2048  # queued jobs per device and project held in memory; rest: store\n\n"
        "[anomaly]  # detector thresholds; methods in docs/anomalies.md\n"
        "rate_floor = 60\nvolume_floor = 2000\n"
        "denial_threshold = 10\nattestation_device_threshold = 3\n"
        "canary_interval_seconds = 600.0\ncanary_fidelity_floor = 0.9\n\n"
        "[admission]  # submission rate limits (jobs; a batch costs its size); README Admission\n"
        "principal_burst = 2000\nprincipal_jobs_per_second = 20.0\n"
        "facility_burst = 10000\nfacility_jobs_per_second = 500.0\n"
        "max_store_queue = 1000  # shed submissions while this many store calls wait\n"
        "max_queued_per_device = 0  # queued jobs per device (0: no bound; else >= 100)\n\n"
        "[timing]\nlease_seconds = 120.0\nmax_attempts = 3\nheartbeat_seconds = 1.0\n"
    )
