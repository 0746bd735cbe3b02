"""Broker settings: one frozen dataclass, read from TOML, then QTESTBED_* variables, then flags.

Nothing here can weaken a security check: TLS and client certificates are always required,
attestation and receipts are always verified. Settings only say where things are and how big
or how long they may be.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from broker.jobs.circuits import CircuitLimits
from broker.jobs.decode_gate import DecodingSettings
from broker.jobs.scheduler import SchedulerSettings
from broker.policy.engine import DEFAULT_POLICIES
from broker.policy.export_control import DEFAULT_PROFILE
from broker.store import MEMORY_URL, is_postgres_url

# The most jobs in one SubmitJobs call (broker.jobs.submit.MAX_BATCH, which imports this module).
LARGEST_BATCH = 100


# The most leases one driver connection may be allowed to hold: a connection remembers as many
# of its withdrawn leases (broker.link.fleet), to tell its answers to a withdrawal apart.
MAX_LEASES_PER_DRIVER = 64

# The most worker processes one broker may run ([server] workers): each holds a few store
# connections and its own decoder children.
MAX_WORKERS = 64


class SettingsError(ValueError):
    """A settings file or value is missing or wrong; the message names the key."""


@dataclass(frozen=True, kw_only=True, slots=True)
class TimingSettings:
    """How long leases, heartbeats and attestation results last (seconds)."""

    lease_seconds: float = 120.0
    max_attempts: int = 3
    heartbeat_seconds: float = 1.0
    heartbeat_misses: int = 3
    nonce_ttl_seconds: float = 10.0
    max_evidence_age_seconds: float = 30.0
    max_clock_skew_seconds: float = 5.0
    attestation_ttl_seconds: float = 300.0
    tick_seconds: float = 0.5
    # On a shared PostgreSQL store, replicas hear each other's changes at once (LISTEN/NOTIFY);
    # they also re-read queues, access records and the registry this often, in case a
    # notification was lost (every tick while the listener is down).
    replica_poll_seconds: float = 5.0
    checkpoint_every_entries: int = 100
    checkpoint_every_seconds: float = 60.0
    # Front-door refusals are audited once per reason and identity per this many seconds.
    front_door_audit_seconds: float = 60.0
    # Driver-link refusals likewise, once per reason and device per this many seconds.
    link_refusal_audit_seconds: float = 60.0
    # Hellos per link key: a burst of this many, then one per this many seconds.
    hello_burst: int = 20
    hello_every_seconds: float = 1.0
    # Live connections one link key may hold (a driver restarting briefly holds two).
    connections_per_key: int = 4
    # Challenges outstanding per connection; older ones are forgotten (answers refused).
    nonces_per_connection: int = 4
    # Leases one driver connection may hold at once (it asks for up to this many in its Hello:
    # the next job is then ready when the device frees). Each waits in the driver's queue
    # under its own lease clock, so a lease here must outlast the jobs granted before it.
    max_leases_per_driver: int = 8

    def __post_init__(self) -> None:
        # These bound what one link key can make the broker do: none may be switched off.
        limits = ("hello_burst", "connections_per_key", "nonces_per_connection")
        for key in (*limits, "max_leases_per_driver"):
            if getattr(self, key) < 1:
                raise SettingsError(f"[timing] {key} must be at least 1")
        if self.hello_every_seconds <= 0:
            raise SettingsError("[timing] hello_every_seconds must be positive")
        if self.max_leases_per_driver > MAX_LEASES_PER_DRIVER:
            raise SettingsError(
                f"[timing] max_leases_per_driver must be at most {MAX_LEASES_PER_DRIVER}"
            )


@dataclass(frozen=True, kw_only=True, slots=True)
class CallLimitSettings:
    """[calls]: what one principal, and everyone together, may hold open at the gRPC edge."""

    # Open server streams (WatchJob, StreamAudit) one principal may hold at once.
    streams_per_principal: int = 64
    # Calls in progress at once across the server, streams included.
    max_concurrent_rpcs: int = 4096
    # The retry delay a caller refused by either limit is given.
    retry_after_seconds: float = 2.0
    # A WatchJob stream sends a position-only update at most once per this many seconds (its
    # job's own changes go at once): a churning queue costs each stream a bounded rate.
    position_update_seconds: float = 1.0
    # ... and all of one principal's streams together send at most this many position-only
    # updates a second: 1,500 streams of one principal cost what 50 do, not 1,500 messages a
    # second on the loop that serves everyone's calls (each stream is paced to
    # max(position_update_seconds, streams / this)).
    position_updates_per_principal: float = 50.0

    def __post_init__(self) -> None:
        # These bound what one principal can make the broker hold: none may be switched off.
        for key in ("streams_per_principal", "max_concurrent_rpcs"):
            if getattr(self, key) < 1:
                raise SettingsError(f"[calls] {key} must be at least 1")
        if self.retry_after_seconds <= 0:
            raise SettingsError("[calls] retry_after_seconds must be positive")
        if self.position_update_seconds < 0:
            raise SettingsError("[calls] position_update_seconds must not be negative")
        if not self.position_updates_per_principal > 0:
            raise SettingsError("[calls] position_updates_per_principal must be positive")


@dataclass(frozen=True, kw_only=True, slots=True)
class AnomalySettings:
    """Thresholds of the anomaly detectors (see docs/anomalies.md for each method)."""

    # Per-principal accepted submission calls per window (a SubmitJobs batch is one call)
    # against that principal's own EWMA baseline, or the facility prior for a newcomer.
    rate_window_seconds: float = 60.0
    rate_sigmas: float = 4.0
    rate_floor: int = 60  # never alarm below this many submission calls in one window
    rate_smoothing: float = 0.2
    # The same method over jobs per window (batch sizes summed): many full batches back to back.
    volume_floor: int = 2000  # never alarm below this many jobs in one window (20 full batches)
    # Denials and device-lookup misses (probing) per principal in a sliding window.
    denial_window_seconds: float = 300.0
    denial_threshold: int = 10
    # Refusals at the front door of one identity (a revoked or removed principal who keeps
    # trying, a certificate from the wrong CA) in a sliding window.
    refusal_window_seconds: float = 300.0
    refusal_threshold: int = 20
    # Attestation failures per device, and across the facility, in a sliding window.
    attestation_window_seconds: float = 300.0
    attestation_device_threshold: int = 3
    attestation_facility_threshold: int = 10
    # Canary circuits: a GHZ state on each attested device every interval; alarm below floor.
    canary_interval_seconds: float = 600.0
    canary_shots: int = 1000
    canary_qubits: int = 3
    canary_fidelity_floor: float = 0.9
    # Busy share of each device over this window feeds qtestbed_device_utilization_ratio.
    utilization_window_seconds: float = 300.0


@dataclass(frozen=True, kw_only=True, slots=True)
class AdmissionSettings:
    """Rate limits on submissions (token buckets) and load shedding; see README "Admission".

    A submission costs the jobs it queues: 1 for SubmitJob, the batch size for SubmitJobs (the
    store writes one row per job). The defaults sit above the busiest realistic researcher in
    docs/anomalies.md (a 2-D sweep of 15 full batches back to back), so only floods meet them."""

    # Per principal: a burst of this many jobs, refilled at this many jobs per second.
    principal_burst: int = 2000
    principal_jobs_per_second: float = 20.0
    # Across the facility (every principal together): protects the store.
    facility_burst: int = 10000
    facility_jobs_per_second: float = 500.0
    # Principals with a bucket at once (idle full buckets are dropped to make room).
    max_tracked_principals: int = 10000
    # Shed new submissions while this many store calls wait for the store thread.
    max_store_queue: int = 1000
    # Jobs queued on one device at most (0: no bound). The facility bucket bounds the rate
    # into the store, not where it goes: a device slower than its share of that rate gathers
    # a queue that grows for as long as the load lasts, while a faster one could have taken
    # the calls shed for it. This bound refuses work for the device that cannot keep up (and
    # only it), so each device is offered what it completes plus this much backlog. Past it,
    # each project still queues up to its fair-share-weighted part (broker.jobs.admission).
    max_queued_per_device: int = 0
    # The retry delay a shed submission is given.
    overload_retry_seconds: float = 1.0
    # Admission refusals are audited once per reason and principal per this many seconds.
    refusal_audit_seconds: float = 60.0

    def __post_init__(self) -> None:
        # A burst below the largest batch would refuse a valid batch forever; none may be off.
        for key in ("principal_burst", "facility_burst"):
            if getattr(self, key) < LARGEST_BATCH:
                raise SettingsError(
                    f"[admission] {key} must be at least {LARGEST_BATCH} (the largest batch)"
                )
        for key in ("max_tracked_principals", "max_store_queue"):
            if getattr(self, key) < 1:
                raise SettingsError(f"[admission] {key} must be at least 1")
        if self.max_queued_per_device and self.max_queued_per_device < LARGEST_BATCH:
            # A smaller bound would refuse a full batch forever, even on an empty device.
            raise SettingsError(
                f"[admission] max_queued_per_device must be 0 (no bound) or at least "
                f"{LARGEST_BATCH} (the largest batch)"
            )
        for key in ("principal_jobs_per_second", "facility_jobs_per_second"):
            if getattr(self, key) <= 0:
                raise SettingsError(f"[admission] {key} must be positive")
        if self.overload_retry_seconds <= 0 or self.refusal_audit_seconds <= 0:
            raise SettingsError("[admission] retry and audit periods must be positive")


@dataclass(frozen=True, kw_only=True, slots=True)
class ServerSettings:
    """[server]: how many broker processes serve this broker.toml (`broker.workers`)."""

    # Worker processes sharing the gRPC port (SO_REUSEPORT) under one supervising process,
    # each a replica on the shared PostgreSQL store; 1 runs the broker in this process.
    workers: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.workers <= MAX_WORKERS:
            raise SettingsError(f"[server] workers must be between 1 and {MAX_WORKERS}")


@dataclass(frozen=True, kw_only=True, slots=True)
class BrokerSettings:
    """Everything the broker process needs to start."""

    facility: Path
    store: str
    ca_cert: Path
    # The facility's client-issuing CA: a principal's certificate must come from it.
    client_ca_cert: Path
    server_cert: Path
    server_key: Path
    # CurveZMQ: the broker's link secret key, and the folder of authorised driver public keys.
    link_secret_key: Path
    link_clients: Path
    # Export-control band table (US ECCN 4A906.a by default); devices are classified from it.
    export_control_profile: Path = DEFAULT_PROFILE
    # Cedar policies deciding clearance (the shipped default set unless the facility has its own).
    policies: Path = DEFAULT_POLICIES
    listen: str = "127.0.0.1:50051"
    link_listen: str = "tcp://127.0.0.1:5555"
    metrics_listen: str = "127.0.0.1:9464"
    # Plaintext gRPC health only (broker.grpc.health_port), for probes without a client
    # certificate; "" serves none.
    health_listen: str = ""
    max_message_bytes: int = 4 * 1024 * 1024
    limits: CircuitLimits = field(default_factory=CircuitLimits)
    timing: TimingSettings = field(default_factory=TimingSettings)
    anomaly: AnomalySettings = field(default_factory=AnomalySettings)
    scheduling: SchedulerSettings = field(default_factory=SchedulerSettings)
    calls: CallLimitSettings = field(default_factory=CallLimitSettings)
    decoding: DecodingSettings = field(default_factory=DecodingSettings)
    admission: AdmissionSettings = field(default_factory=AdmissionSettings)
    # Registered audit witnesses: name -> PEM public key file ([witnesses] in broker.toml).
    witnesses: Mapping[str, Path] = field(default_factory=dict)
    server: ServerSettings = field(default_factory=ServerSettings)

    def __post_init__(self) -> None:
        # Workers are replicas: only a store several processes share keeps them one broker.
        if self.server.workers > 1 and not is_postgres_url(self.store):
            raise SettingsError(
                f"[server] workers = {self.server.workers} needs a PostgreSQL store: a SQLite "
                'file is for one broker process; set workers = 1, or store = "postgresql://..."'
            )


_ENV_KEYS = ("store", "listen", "link_listen", "metrics_listen", "health_listen")


def load_settings(path: Path, overrides: Mapping[str, Any] | None = None) -> BrokerSettings:
    """Read `path`, apply QTESTBED_<KEY> environment variables, then explicit overrides."""
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SettingsError(f"cannot read broker settings {path}: {exc}") from exc
    base = path.resolve().parent
    top = dict(raw)
    for key in _ENV_KEYS:
        env = os.environ.get(f"QTESTBED_{key.upper()}")
        if env:
            top[key] = env
    top.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return BrokerSettings(
            facility=_path(base, top, "facility"),
            store=_store_url(base, str(top["store"])),
            ca_cert=_path(base, top, "ca_cert"),
            client_ca_cert=_client_ca(base, top, path),
            server_cert=_path(base, top, "server_cert"),
            server_key=_path(base, top, "server_key"),
            link_secret_key=_path(base, top, "link_secret_key"),
            link_clients=_path(base, top, "link_clients"),
            export_control_profile=_path(base, top, "export_control_profile")
            if "export_control_profile" in top
            else DEFAULT_PROFILE,
            policies=_path(base, top, "policies") if "policies" in top else DEFAULT_POLICIES,
            listen=str(top.get("listen", "127.0.0.1:50051")),
            link_listen=str(top.get("link_listen", "tcp://127.0.0.1:5555")),
            metrics_listen=str(top.get("metrics_listen", "127.0.0.1:9464")),
            health_listen=str(top.get("health_listen", "")),
            max_message_bytes=int(top.get("max_message_bytes", 4 * 1024 * 1024)),
            limits=_section(CircuitLimits, top.get("limits", {}), "limits"),
            timing=_section(TimingSettings, top.get("timing", {}), "timing"),
            anomaly=_section(AnomalySettings, top.get("anomaly", {}), "anomaly"),
            scheduling=_section(SchedulerSettings, top.get("scheduling", {}), "scheduling"),
            calls=_section(CallLimitSettings, top.get("calls", {}), "calls"),
            decoding=_section(DecodingSettings, top.get("decoding", {}), "decoding"),
            admission=_section(AdmissionSettings, top.get("admission", {}), "admission"),
            witnesses=_witnesses(base, top.get("witnesses", {})),
            server=_section(ServerSettings, top.get("server", {}), "server"),
        )
    except KeyError as exc:
        raise SettingsError(f"{path}: missing required key {exc.args[0]!r}") from exc


def _witnesses(base: Path, table: object) -> dict[str, Path]:
    if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
        raise SettingsError("[witnesses] maps each witness's name to its public key file")
    return {str(name): _path(base, table, name) for name in table}


def _client_ca(base: Path, table: Mapping[str, Any], path: Path) -> Path:
    if "client_ca_cert" not in table:
        raise SettingsError(
            f"{path}: no client_ca_cert: this facility predates separate client and device "
            "issuing CAs; run 'qtestbed facility upgrade' on it (see the README)"
        )
    return _path(base, table, "client_ca_cert")


def _path(base: Path, table: Mapping[str, Any], key: str) -> Path:
    value = Path(str(table[key]))
    return value if value.is_absolute() else base / value


def _store_url(base: Path, url: str) -> str:
    """Relative SQLite paths are relative to the settings file, not the working directory.

    The in-memory store is for tests that build the core themselves: a broker on it would lose
    every acknowledged job when it stops, so settings refuse it."""
    if url.strip() == MEMORY_URL:
        raise SettingsError(
            f"store {url!r} keeps nothing once the broker stops; give a SQLite file "
            "(sqlite:broker.db) or a PostgreSQL URL"
        )
    if url.startswith("sqlite:") and not url.startswith("sqlite:///"):
        return "sqlite://" + str((base / url.removeprefix("sqlite:")).resolve())
    return url


def _section(cls: Any, table: Mapping[str, Any], name: str) -> Any:
    known = {f.name: f.type for f in dataclasses.fields(cls)}
    unknown = set(table) - set(known)
    if unknown:
        raise SettingsError(f"[{name}] has unknown keys: {', '.join(sorted(unknown))}")
    try:
        return cls(**table)
    except TypeError as exc:
        raise SettingsError(f"[{name}]: {exc}") from exc
