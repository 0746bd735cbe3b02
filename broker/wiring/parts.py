"""The parts of the broker's object graph as typed records: what `build` returns, and what the
process (`broker.app`) and the unit-test harness reach into."""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptography import x509

from attestation.keys import SigningKey
from broker.access.call_limits import CallLimits
from broker.access.clearance import ClearanceGate
from broker.access.credentials import CredentialBook
from broker.access.facility import FacilityRef
from broker.access.front_door import FrontDoor
from broker.access.grants import Grants
from broker.access.open_streams import OpenStreams
from broker.access.quota import Quotas
from broker.access.records import AccessRecords
from broker.access.refusals import AccessRefusals
from broker.access.registry import AccessRegistry
from broker.access.requests import AccessRequests
from broker.anomaly.monitor import AnomalyMonitor
from broker.audit.consistency import ConsistencyProver
from broker.audit.log import AuditLog
from broker.audit.service import AuditReader
from broker.audit.signer import CheckpointSigner
from broker.audit.witnesses import CosignatureDesk, WitnessKeys
from broker.clock import Clock
from broker.devices.admin import DeviceAdmin
from broker.devices.directory import DeviceDirectory
from broker.devices.export_class import ExportClasses
from broker.devices.operations import DeviceSchedule
from broker.devices.registry import DeviceRegistry
from broker.gauges import DeviceGauges
from broker.grpc.interceptor import EdgeInterceptor
from broker.grpc.server import Servicers
from broker.jobs.admission import SubmissionAdmission
from broker.jobs.circuits import CircuitDecoder
from broker.jobs.decode_gate import DecodeGate
from broker.jobs.ledger import JobLedger
from broker.jobs.result_proofs import ResultProofService
from broker.jobs.scheduler import Scheduler
from broker.jobs.service import JobService
from broker.jobs.session_service import SessionService
from broker.jobs.sessions import SessionManager
from broker.jobs.submit import Submission
from broker.jobs.usage import UsageTracker
from broker.jobs.wakeups import DispatchWakeups
from broker.jobs.watch import JobWatchers
from broker.link.attestor import Attestor
from broker.link.dispatcher import Dispatcher
from broker.link.door import LinkDoor
from broker.link.fleet import Fleet
from broker.link.hub import DriverHub
from broker.link.leases import LeaseKeeper
from broker.link.port import LinkPort
from broker.link.replicas import ReplicaRoster
from broker.link.rights import DispatchRights
from broker.metrics import BrokerMetrics
from broker.policy.engine import PolicyEngine
from broker.policy.export_control import ExportProfile
from broker.scrape.gate import ScrapeGate
from broker.settings import BrokerSettings
from broker.store.runner import StoreRunner
from broker.wiring.replicas import ReplicaSync


@dataclass(frozen=True, kw_only=True, slots=True)
class Foundation:
    """What the graph stands on, made by the caller: settings, time, storage, keys, policy."""

    settings: BrokerSettings
    clock: Clock
    metrics: BrokerMetrics
    runner: StoreRunner
    facility: FacilityRef
    audit_key: SigningKey
    # The client-issuing CA's certificate: a principal's certificate must come from it.
    client_ca: x509.Certificate
    policy: PolicyEngine
    export_profile: ExportProfile
    decoder: CircuitDecoder
    link: LinkPort
    # The audit witnesses the operator registered (none by default).
    witness_keys: WitnessKeys = field(default_factory=WitnessKeys)


@dataclass(frozen=True, kw_only=True, slots=True)
class Registries:
    fleet: Fleet  # the live driver connections; JobParts.fleet is the same object
    audit: AuditLog
    anomalies: AnomalyMonitor
    wakeups: DispatchWakeups
    devices: DeviceRegistry
    exports: ExportClasses
    records: AccessRecords
    access: AccessRegistry
    schedule: DeviceSchedule
    quotas: Quotas
    gate: ClearanceGate
    credentials: CredentialBook
    streams: OpenStreams
    call_limits: CallLimits
    front_door: FrontDoor
    grants: Grants
    refusals: AccessRefusals
    requests: AccessRequests


@dataclass(frozen=True, kw_only=True, slots=True)
class JobParts:
    scheduler: Scheduler
    fleet: Fleet
    sessions: SessionManager
    usage: UsageTracker
    watchers: JobWatchers
    ledger: JobLedger
    decode_gate: DecodeGate
    admission: SubmissionAdmission


@dataclass(frozen=True, kw_only=True, slots=True)
class LinkParts:
    rights: DispatchRights
    attestor: Attestor
    leases: LeaseKeeper
    dispatcher: Dispatcher
    hub: DriverHub
    door: LinkDoor
    signer: CheckpointSigner
    gauges: DeviceGauges
    replicas: ReplicaSync  # other replicas' changes on a shared store
    roster: ReplicaRoster  # this replica's id, in the leases it writes


@dataclass(frozen=True, kw_only=True, slots=True)
class Services:
    """The domain services the gRPC servicers call (and unit tests call directly)."""

    submission: Submission
    jobs: JobService
    sessions: SessionService
    directory: DeviceDirectory
    device_admin: DeviceAdmin
    audit: AuditReader
    result_proofs: ResultProofService
    cosignatures: CosignatureDesk
    proofs: ConsistencyProver


@dataclass(frozen=True, kw_only=True, slots=True)
class Components:
    base: Foundation
    registries: Registries
    jobs: JobParts
    link: LinkParts
    services: Services
    servicers: Servicers
    edge: EdgeInterceptor
    scrape: ScrapeGate  # who may read /metrics
