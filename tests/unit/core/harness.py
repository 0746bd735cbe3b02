"""The broker's core without sockets: the real object graph (`broker.wiring.build`) over the
in-memory store, the fake driver link and a fake clock, with a facility made in memory.

A test drives it the way the edges would: it calls the domain services, and plays driver
agents with `Driver`, whose messages go straight to the hub's router. Nothing here sleeps:
time moves only with `core.clock.advance`, and the dispatcher's inbox is drained with `pump`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from cryptography import x509

from attestation.calibration import NO_WINDOWS, CalibrationWindows
from attestation.evidence import EvidenceClaims, Measurements, make_evidence
from attestation.keys import KeyKind, SigningKey
from attestation.pki import cert_to_pem, create_ca, device_uri, issue_certificate
from attestation.receipts import ReceiptClaims, result_digest, sign_receipt
from attestation.sealing import new_keypair
from broker.access.facility import Facility, FacilityRef
from broker.access.model import AccessRequest, Elevation, Principal, Project, RecordKind, Role
from broker.access.requests import Filing
from broker.audit.model import AuditEvent
from broker.clock import FakeClock
from broker.devices.model import ReferenceScope
from broker.devices.registry import ReferenceInput
from broker.jobs.circuits import CircuitDecoder, InProcessDecoder
from broker.jobs.decode_gate import DecodingSettings
from broker.jobs.model import Job
from broker.jobs.scheduler import SchedulerSettings
from broker.jobs.submit import SubmitRequest
from broker.link import messages as m
from broker.link.fake import FakeLink, make_peer
from broker.link.fleet import DriverConnection
from broker.link.peer import Peer
from broker.metrics import BrokerMetrics
from broker.policy.engine import DEFAULT_POLICIES, PolicyEngine
from broker.policy.export_control import DEFAULT_PROFILE, load_profile
from broker.settings import AdmissionSettings, BrokerSettings, CallLimitSettings, TimingSettings
from broker.store.memory import MemoryStore
from broker.store.runner import StoreRunner
from broker.wiring import Components, Foundation, build
from qtestbed.shared.circuits import CircuitFormat

TIERS = ("open", "controlled", "restricted")
FIRMWARE = "fw-1"
CALIBRATION = "c" * 64
_UNUSED = Path("/nonexistent")


def ghz(n: int = 2) -> bytes:
    gates = "".join(f"cx q[{i}],q[{i + 1}];\n" for i in range(n - 1))
    return (
        f'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[{n}];\ncreg c[{n}];\n'
        f"h q[0];\n{gates}measure q -> c;\n"
    ).encode()


def request(device_id: str = "dev-open", *, shots: int = 100, **changes: object) -> SubmitRequest:
    base = SubmitRequest(
        device_id=device_id, circuit_format=CircuitFormat.OPENQASM2, payload=ghz(), shots=shots
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def principals() -> dict[str, Principal]:
    researcher = frozenset({Role.RESEARCHER})
    made = [
        Principal(name="alice", tier="open", roles=researcher, projects=("lab",)),
        Principal(name="bob", tier="restricted", roles=researcher, projects=("lab",)),
        Principal(name="olivia", tier="open", roles=frozenset({Role.OPERATOR}), projects=("ops",)),
        Principal(name="sam", tier="open", roles=frozenset({Role.SECURITY}), projects=("ops",)),
        Principal(name="sue", tier="open", roles=frozenset({Role.SECURITY}), projects=("ops",)),
        Principal(name="petra", tier="open", roles=frozenset({Role.APPROVER}), projects=("ops",)),
    ]
    return {p.name: p for p in made}


@dataclass(frozen=True, kw_only=True, slots=True)
class DeviceKit:
    """A registered device's attestation key and certificate chain."""

    device_id: str
    key: SigningKey
    chain: bytes
    num_qubits: int


class Core:
    def __init__(
        self,
        *,
        timing: Mapping[str, Any] | None = None,
        calls: Mapping[str, Any] | None = None,
        admission: Mapping[str, Any] | None = None,
        projects: tuple[Project, ...] = (Project(name="lab"), Project(name="ops")),
        decoder: CircuitDecoder | None = None,
        decoding: DecodingSettings | None = None,
        scheduling: Mapping[str, Any] | None = None,
    ) -> None:
        self.clock = FakeClock()
        self.link = FakeLink()
        self.store = MemoryStore()
        self.runner = StoreRunner(self.store)
        self.metrics = BrokerMetrics()
        self.ca_key = SigningKey.generate(KeyKind.ECDSA_P256)
        self.ca = create_ca("test root", self.ca_key, now=self._now_dt(), days=365, path_length=1)
        facility = Facility(
            name="test facility",
            tiers=TIERS,
            principals=principals(),
            projects=projects,
            seed_devices=(),
            ca_pem=cert_to_pem(self.ca),
            jurisdiction="US",
        )
        settings = BrokerSettings(
            facility=_UNUSED,
            store="memory:",
            ca_cert=_UNUSED,
            client_ca_cert=_UNUSED,
            server_cert=_UNUSED,
            server_key=_UNUSED,
            link_secret_key=_UNUSED,
            link_clients=_UNUSED,
            timing=dataclasses.replace(TimingSettings(), **dict(timing or {})),
            calls=CallLimitSettings(**dict(calls or {})),
            decoding=decoding or DecodingSettings(),
            admission=dataclasses.replace(AdmissionSettings(), **dict(admission or {})),
            scheduling=dataclasses.replace(SchedulerSettings(), **dict(scheduling or {})),
        )
        self.parts: Components = build(
            Foundation(
                settings=settings,
                clock=self.clock,
                metrics=self.metrics,
                runner=self.runner,
                facility=FacilityRef(_UNUSED, facility),
                audit_key=SigningKey.generate(KeyKind.ECDSA_P256),
                client_ca=self.ca,
                policy=PolicyEngine.load_files(DEFAULT_POLICIES),
                export_profile=load_profile(DEFAULT_PROFILE),
                decoder=decoder or InProcessDecoder(),
                link=self.link,
            )
        )
        self.devices: dict[str, DeviceKit] = {}

    def _now_dt(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.clock.now(), dt.UTC) - dt.timedelta(minutes=5)

    async def start(self) -> Core:
        r = self.parts.registries
        await self.runner.call(self.store.migrate)
        await r.devices.load()
        await r.records.load()
        await r.access.seed(self.parts.base.facility.current)
        await self.parts.jobs.sessions.load()
        return self

    def close(self) -> None:
        self.runner.close()
        self.parts.jobs.decode_gate.close()

    async def register(
        self,
        device_id: str = "dev-open",
        *,
        tier: str = "open",
        num_qubits: int = 5,
        calibration: CalibrationWindows = NO_WINDOWS,
    ) -> DeviceKit:
        """Register a device with a certificate from this facility's CA and reference values."""
        key = SigningKey.generate(KeyKind.ED25519)
        cert = issue_certificate(
            ca_key=self.ca_key,
            ca_cert=self.ca,
            subject_cn=device_id,
            public_key=key.public_key,
            now=self._now_dt(),
            days=30,
            uris=[device_uri(device_id)],
        )
        chain = cert_to_pem(cert)
        registry = self.parts.registries.devices
        await registry.register("olivia", chain, tier=tier, model=device_id)
        await registry.set_reference(
            "olivia",
            ReferenceInput(
                scope=ReferenceScope.DEVICE,
                scope_id=device_id,
                firmware=frozenset({FIRMWARE}),
                control_software=frozenset({"ctl-1"}),
                driver_build=frozenset({"drv-1"}),
                calibration_digest=frozenset({CALIBRATION}),
                num_qubits=num_qubits,
                calibration=calibration,
            ),
        )
        kit = DeviceKit(device_id=device_id, key=key, chain=chain, num_qubits=num_qubits)
        self.devices[device_id] = kit
        return kit

    def driver(self, device_id: str = "dev-open", *, peer: Peer | None = None) -> Driver:
        """A new connection of the device; `peer` plays one with a chosen key and route."""
        return Driver(self, self.devices[device_id], peer)

    async def pump(self) -> None:
        """Let the dispatcher fill every device it was asked to look at (as its task would)."""
        dispatcher = self.parts.link.dispatcher
        wakeups = self.parts.registries.wakeups
        while (device_id := wakeups.take()) is not None:
            await dispatcher.fill(device_id)


class Driver:
    """One driver connection, played by the test: it speaks through the hub's router."""

    def __init__(self, core: Core, kit: DeviceKit, peer: Peer | None = None) -> None:
        self.core = core
        self.kit = kit
        self.peer, self.link_secret = (peer, b"") if peer else make_peer(kit.device_id)
        # This connection's own grant key pair, as a driver agent makes one for each Hello.
        self.grant_secret, self.grant_key = new_keypair()
        self.boot_epoch = uuid.uuid4().hex
        self.counter = 0

    async def say(self, message: m.Inbound) -> None:
        await self.core.parts.link.hub.route(self.peer, message)

    def heard(self) -> list[m.Outbound]:
        """What the broker said to this connection since the last call."""
        return self.core.link.take(self.peer)

    async def hello(self, *, grant_key: bytes | None = None, max_leases: int = 1) -> None:
        """Say Hello with this connection's grant key (or `grant_key`, to play a bad one),
        asking to hold up to `max_leases` leases at once."""
        await self.say(
            m.Hello(
                device_id=self.kit.device_id,
                num_qubits=self.kit.num_qubits,
                basis_gates=("cx", "h", "id", "rz", "sx", "x"),
                coupling_map=(),
                backend="fake",
                driver_build="drv-1",
                certificate_chain=self.kit.chain,
                grant_key=self.grant_key if grant_key is None else grant_key,
                max_leases=max_leases,
            )
        )

    def evidence(
        self,
        nonce: bytes,
        *,
        firmware: str = FIRMWARE,
        error: float | None = 0.01,
        **figures: float,
    ) -> bytes:
        """Evidence answering `nonce`; `figures` are further calibration claims (readout_error,
        t1_us, t2_us)."""
        self.counter += 1
        claims = EvidenceClaims(
            device_id=self.kit.device_id,
            nonce=nonce,
            issued_at=self.core.clock.now(),
            boot_epoch=self.boot_epoch,
            counter=self.counter,
            measurements=Measurements(
                firmware=firmware,
                control_software="ctl-1",
                driver_build="drv-1",
                calibration_digest=CALIBRATION,
                num_qubits=self.kit.num_qubits,
                two_qubit_error=error,
                **figures,
            ),
        )
        return make_evidence(claims, self.kit.key).to_json()

    async def attest(self, **evidence: object) -> m.Verdict:
        """Hello (if not yet said), answer the challenge, return the verdict."""
        if not any(isinstance(msg, m.Challenge) for msg in self.core.link.sent_to(self.peer)):
            await self.hello()
        challenge = next(msg for msg in self.heard() if isinstance(msg, m.Challenge))
        await self.say(m.Evidence(envelope=self.evidence(challenge.nonce, **evidence)))  # type: ignore[arg-type]
        return next(msg for msg in self.heard() if isinstance(msg, m.Verdict))

    def grants(self) -> list[m.LeaseGrant]:
        return [msg for msg in self.heard() if isinstance(msg, m.LeaseGrant)]

    def receipt(self, grant: m.LeaseGrant, counts: Mapping[str, int]) -> bytes:
        conn = self.core.parts.jobs.fleet.get(self.peer)
        assert conn is not None
        assert conn.attestation is not None
        claims = ReceiptClaims(
            job_id=grant.job_id,
            device_id=self.kit.device_id,
            circuit_digest=grant.circuit.digest,
            shots=grant.shots,
            result_digest=result_digest(counts),
            dispatch_nonce=grant.dispatch_nonce,
            evidence_digest=conn.attestation.evidence_digest,
            issued_at=self.core.clock.now(),
        )
        return sign_receipt(claims, self.kit.key).to_json()

    async def finish(self, grant: m.LeaseGrant, counts: Mapping[str, int] | None = None) -> None:
        """Report the lease started and then its result, with a valid receipt."""
        await self.say(m.LeaseStarted(lease_id=grant.lease_id, job_id=grant.job_id))
        counts = counts or {"00": grant.shots}
        await self.say(
            m.LeaseResult(
                lease_id=grant.lease_id,
                job_id=grant.job_id,
                counts=counts,
                execution_seconds=0.01,
                receipt=self.receipt(grant, counts),
            )
        )


# --- small readers and set-ups for the service tests (test_jobs_*, test_sessions_*, ...) ------


def audit_mark(core: Core) -> int:
    """The sequence number of the newest audit entry: pass it to `audit_since` later."""
    return len(core.store.audit_entries(limit=1_000_000))


def audit_since(core: Core, mark: int) -> list[AuditEvent]:
    """The audit events written after `mark` (from `audit_mark`), oldest first."""
    return [entry.event for entry in core.store.audit_entries(after_seq=mark, limit=1_000_000)]


def metric(core: Core, name: str, **labels: str) -> float:
    """A metric sample's value; 0.0 for a labelled series that was never touched."""
    value = core.metrics.registry.get_sample_value(name, labels)
    return value if value is not None else 0.0


def stored_jobs(core: Core) -> list[Job]:
    """Every job in the store, oldest first: what a refused request must not have added to."""
    rows = core.store.list_jobs(owner=None, device_id=None, states=(), limit=1_000_000)
    return [job for _, job in reversed(rows)]


async def attested(
    core: Core, device_id: str = "dev-open", *, tier: str = "open", num_qubits: int = 5
) -> Driver:
    """Register a device and connect a driver whose evidence affirms; returns the driver."""
    await core.register(device_id, tier=tier, num_qubits=num_qubits)
    driver = core.driver(device_id)
    verdict = await driver.attest()
    assert verdict.affirming, verdict.reasons
    return driver


async def amend_principal(core: Core, name: str, **changes: object) -> Principal:
    """An operator (olivia) changes a principal at its current version; returns the result."""
    access = core.parts.registries.access
    current = access.principal(name)
    assert current is not None, name
    version = core.parts.registries.records.version(RecordKind.PRINCIPAL, name)
    changed = dataclasses.replace(current, **changes)  # type: ignore[arg-type]
    return (await access.put_principal("olivia", changed, version)).value


async def granted(
    core: Core, name: str, kind: Elevation, value: str, *, seconds: float = 3600.0
) -> AccessRequest:
    """`name` asks for an elevation and petra (approver) grants it; returns the grant."""
    requests = core.parts.registries.requests
    filing = Filing(
        principal="", kind=kind, value=value, duration_seconds=seconds, reason="test work"
    )
    filed = await requests.file(name, filing)
    return await requests.approve("petra", filed.request_id, "approved for the test")


# --- readers and set-ups for the link and device tests (test_dispatch_*, test_leases_*,
# test_attestor_*, test_devices_*, test_hub_*) ------------------------------------------------

Said = TypeVar("Said", bound=m.Outbound)


async def queued(core: Core, owner: str = "alice", job: SubmitRequest | None = None) -> str:
    """Submit one job (default: `request()`) as `owner`; returns its id. It moves on `pump`."""
    submission = core.parts.services.submission
    [(view, created)] = await submission.submit_many(owner, [job or request()])
    assert created
    return view.job.job_id


async def start_ticks(core: Core) -> None:
    """Start what `hub.tick()` needs besides the core (the audit signer), as the broker does."""
    await core.parts.link.signer.start()


async def job_of(core: Core, job_id: str) -> Job:
    """The job as stored now."""
    job = await core.parts.jobs.ledger.get(job_id)
    assert job is not None, job_id
    return job


def events(core: Core, kind: str) -> list[AuditEvent]:
    """Every audit event of `kind`, oldest first."""
    entries = core.store.audit_entries(limit=1_000_000)
    return [entry.event for entry in entries if entry.event.kind == kind]


def connection(driver: Driver) -> DriverConnection:
    """The broker's live record of this driver's connection (it must be connected)."""
    conn = driver.core.parts.jobs.fleet.get(driver.peer)
    assert conn is not None, "the driver is not connected"
    return conn


def only(messages: list[m.Outbound], kind: type[Said]) -> list[Said]:
    """The messages of one kind, oldest first."""
    return [msg for msg in messages if isinstance(msg, kind)]


def device_chain(
    core: Core,
    device_id: str,
    key: SigningKey,
    *,
    ca: tuple[SigningKey, x509.Certificate] | None = None,
) -> bytes:
    """A device certificate (PEM) for `key`, from this facility's CA or from `ca`."""
    ca_key, ca_cert = ca if ca is not None else (core.ca_key, core.ca)
    cert = issue_certificate(
        ca_key=ca_key,
        ca_cert=ca_cert,
        subject_cn=device_id,
        public_key=key.public_key,
        now=core._now_dt(),
        days=30,
        uris=[device_uri(device_id)],
    )
    return cert_to_pem(cert)
