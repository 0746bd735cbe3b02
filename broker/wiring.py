"""The broker's object graph, built once in dependency order: every service receives what it
uses through its constructor, and nothing is set on it afterwards.

Floors, from the ground up: the store runner, clock, metrics and audit log; the device and
access registries; the clearance gate; the job services; the driver link (attestor, lease
keeper, dispatcher, hub); the gRPC servicers. `broker.app` starts and stops what this builds.
"""

from __future__ import annotations

from dataclasses import dataclass

from attestation.keys import SigningKey
from broker.access.clearance import ClearanceGate
from broker.access.facility import FacilityRef
from broker.access.quota import Quotas
from broker.access.records import AccessRecords
from broker.access.registry import AccessRegistry
from broker.anomaly.canary import CanaryRunner
from broker.anomaly.monitor import AnomalyMonitor
from broker.audit.log import AuditLog
from broker.audit.service import AuditReader
from broker.audit.signer import CheckpointSigner
from broker.clock import Clock
from broker.devices.admin import DeviceAdmin
from broker.devices.directory import DeviceDirectory
from broker.devices.export_class import ExportClasses
from broker.devices.operations import DeviceSchedule
from broker.devices.registry import DeviceRegistry
from broker.gauges import DeviceGauges
from broker.grpc.access import AccessAdminServicer
from broker.grpc.admin import DeviceAdminServicer
from broker.grpc.audit import AuditServicer
from broker.grpc.devices import DeviceServicer
from broker.grpc.jobs import JobServicer
from broker.grpc.server import Servicers
from broker.jobs.circuits import CircuitDecoder
from broker.jobs.guard import CallerGuard
from broker.jobs.ledger import JobLedger, JobObservers
from broker.jobs.model import Job
from broker.jobs.queue_sync import QueueSync
from broker.jobs.scheduler import Scheduler
from broker.jobs.selection import DeviceSelection
from broker.jobs.service import JobService
from broker.jobs.session_model import Session
from broker.jobs.session_service import SessionService
from broker.jobs.sessions import SessionManager
from broker.jobs.submit import Submission, SubmitDeps
from broker.jobs.usage import UsageTracker
from broker.jobs.views import JobViews
from broker.jobs.wakeups import DispatchWakeups
from broker.jobs.watch import JobWatchers
from broker.link.attestor import Attestor
from broker.link.dispatcher import Dispatcher
from broker.link.fleet import Fleet
from broker.link.hub import DriverHub
from broker.link.leases import LeaseKeeper
from broker.link.port import LinkPort
from broker.metrics import BrokerMetrics
from broker.policy.engine import PolicyEngine
from broker.policy.export_control import ExportProfile
from broker.settings import BrokerSettings
from broker.store.runner import StoreRunner


@dataclass(frozen=True, kw_only=True, slots=True)
class Foundation:
    """What the graph stands on, made by the caller: settings, time, storage, keys, policy."""

    settings: BrokerSettings
    clock: Clock
    metrics: BrokerMetrics
    runner: StoreRunner
    facility: FacilityRef
    audit_key: SigningKey
    policy: PolicyEngine
    export_profile: ExportProfile
    decoder: CircuitDecoder
    link: LinkPort


@dataclass(frozen=True, kw_only=True, slots=True)
class Registries:
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


@dataclass(frozen=True, kw_only=True, slots=True)
class JobParts:
    scheduler: Scheduler
    fleet: Fleet
    sessions: SessionManager
    usage: UsageTracker
    watchers: JobWatchers
    ledger: JobLedger
    queue_sync: QueueSync


@dataclass(frozen=True, kw_only=True, slots=True)
class LinkParts:
    attestor: Attestor
    leases: LeaseKeeper
    dispatcher: Dispatcher
    hub: DriverHub
    signer: CheckpointSigner
    gauges: DeviceGauges


@dataclass(frozen=True, kw_only=True, slots=True)
class Services:
    """The domain services the gRPC servicers call (and unit tests call directly)."""

    submission: Submission
    jobs: JobService
    sessions: SessionService
    directory: DeviceDirectory
    device_admin: DeviceAdmin
    audit: AuditReader


@dataclass(frozen=True, kw_only=True, slots=True)
class Components:
    base: Foundation
    registries: Registries
    jobs: JobParts
    link: LinkParts
    services: Services
    servicers: Servicers


def build(base: Foundation) -> Components:
    registries = _registries(base)
    jobs = _jobs(base, registries)
    link = _link(base, registries, jobs)
    services = _services(base, registries, jobs, link)
    return Components(
        base=base,
        registries=registries,
        jobs=jobs,
        link=link,
        services=services,
        servicers=_servicers(base, registries, services),
    )


def _registries(base: Foundation) -> Registries:
    clock, metrics, runner = base.clock, base.metrics, base.runner
    audit = AuditLog(runner, clock)
    anomalies = AnomalyMonitor(
        audit=audit, clock=clock, metrics=metrics, settings=base.settings.anomaly
    )
    wakeups = DispatchWakeups()
    devices = DeviceRegistry(
        runner=runner, clock=clock, audit=audit, trust_anchor=base.facility.current.ca_pem
    )
    exports = ExportClasses(
        profile=base.export_profile,
        registry=devices,
        audit=audit,
        metrics=metrics,
        on_crossing=anomalies.export_crossing,
    )

    def kick_all() -> None:  # an access change may let any queue move
        for device in devices.all():
            wakeups.kick(device.device_id)

    records = AccessRecords(
        runner=runner, clock=clock, audit=audit, metrics=metrics, on_change=[kick_all]
    )
    access = AccessRegistry(records, facility=lambda: base.facility.current)
    schedule = DeviceSchedule(
        records, clock=clock, device_exists=lambda device_id: devices.get(device_id) is not None
    )
    gate = ClearanceGate(
        engine=base.policy,
        facility=base.facility,
        access=access,
        schedule=schedule,
        exports=exports,
    )
    return Registries(
        audit=audit,
        anomalies=anomalies,
        wakeups=wakeups,
        devices=devices,
        exports=exports,
        records=records,
        access=access,
        schedule=schedule,
        quotas=Quotas(access, runner),
        gate=gate,
    )


def _jobs(base: Foundation, r: Registries) -> JobParts:
    settings = base.settings
    scheduler = Scheduler(
        settings.scheduling,
        weight_of=lambda project: p.weight if (p := r.access.project(project)) else 1,
    )
    fleet = Fleet()

    def busy(session: Session) -> bool:  # a job of it waits or runs: the session is not idle
        return scheduler.has_session_jobs(
            session.device_id, session.session_id
        ) or fleet.runs_session(session.device_id, session.session_id)

    sessions = SessionManager(
        runner=base.runner,
        clock=base.clock,
        audit=r.audit,
        settings=settings.scheduling,
        busy=busy,
        wakeups=r.wakeups,
    )
    usage = UsageTracker(
        base.metrics,
        window_seconds=settings.anomaly.utilization_window_seconds,
        tier_of=lambda device_id: d.tier if (d := r.devices.get(device_id)) else "",
    )

    def touch_session(job: Job) -> None:
        if job.session_id:
            sessions.touch(job.session_id)

    watchers = JobWatchers()
    observers = JobObservers(
        on_change=[scheduler.observe],
        on_finished=[usage.job_finished, scheduler.finished, touch_session],
    )
    return JobParts(
        scheduler=scheduler,
        fleet=fleet,
        sessions=sessions,
        usage=usage,
        watchers=watchers,
        ledger=JobLedger(base.runner, base.metrics, watchers, observers),
        queue_sync=QueueSync(base.runner, scheduler),
    )


def _link(base: Foundation, r: Registries, j: JobParts) -> LinkParts:
    clock, metrics, timing = base.clock, base.metrics, base.settings.timing
    attestor = Attestor(
        link=base.link,
        fleet=j.fleet,
        registry=r.devices,
        exports=r.exports,
        clock=clock,
        audit=r.audit,
        metrics=metrics,
        timing=timing,
        wakeups=r.wakeups,
        anomalies=r.anomalies,
    )
    canary = CanaryRunner(base.settings.anomaly, r.anomalies, metrics)
    leases = LeaseKeeper(
        link=base.link,
        fleet=j.fleet,
        registry=r.devices,
        attestor=attestor,
        ledger=j.ledger,
        runner=base.runner,
        clock=clock,
        audit=r.audit,
        metrics=metrics,
        timing=timing,
        canary=canary,
        wakeups=r.wakeups,
    )
    dispatcher = Dispatcher(
        link=base.link,
        fleet=j.fleet,
        registry=r.devices,
        gate=r.gate,
        schedule=r.schedule,
        scheduler=j.scheduler,
        sessions=j.sessions,
        ledger=j.ledger,
        leases=leases,
        canary=canary,
        clock=clock,
        metrics=metrics,
        timing=timing,
        wakeups=r.wakeups,
    )
    signer = CheckpointSigner(
        key=base.audit_key, runner=base.runner, clock=clock, metrics=metrics, timing=timing
    )
    gauges = DeviceGauges(
        runner=base.runner,
        registry=r.devices,
        fleet=j.fleet,
        usage=j.usage,
        clock=clock,
        metrics=metrics,
    )

    async def sync_queues() -> None:  # other replicas queue and take jobs too
        await j.queue_sync.sync(d.device_id for d in r.devices.all())

    async def access_tick() -> None:
        """Pick up changes other replicas made; move queues whose windows opened or closed."""
        if await r.records.refresh():
            return  # the reload already kicked every device
        for device_id in r.schedule.scheduled_devices(clock.now()):
            r.wakeups.kick(device_id)

    hub = DriverHub(
        link=base.link,
        fleet=j.fleet,
        attestor=attestor,
        leases=leases,
        clock=clock,
        metrics=metrics,
        timing=timing,
        wakeups=r.wakeups,
        ticks=[gauges.refresh, sync_queues, signer.tick, access_tick, j.sessions.expire],
    )
    return LinkParts(
        attestor=attestor,
        leases=leases,
        dispatcher=dispatcher,
        hub=hub,
        signer=signer,
        gauges=gauges,
    )


def _services(base: Foundation, r: Registries, j: JobParts, link: LinkParts) -> Services:
    clock = base.clock
    guard = CallerGuard(
        access=r.access,
        registry=r.devices,
        gate=r.gate,
        anomalies=r.anomalies,
        audit=r.audit,
        metrics=base.metrics,
    )
    views = JobViews(
        clock=clock,
        scheduler=j.scheduler,
        registry=r.devices,
        schedule=r.schedule,
        sessions=j.sessions,
        drivers=j.fleet,
    )
    submission = Submission(
        SubmitDeps(
            clock=clock,
            metrics=base.metrics,
            audit=r.audit,
            guard=guard,
            registry=r.devices,
            gate=r.gate,
            selection=DeviceSelection(
                registry=r.devices,
                gate=r.gate,
                schedule=r.schedule,
                exports=r.exports,
                scheduler=j.scheduler,
                drivers=j.fleet,
            ),
            sessions=j.sessions,
            quotas=r.quotas,
            ledger=j.ledger,
            views=views,
            drivers=j.fleet,
            wakeups=r.wakeups,
            anomalies=r.anomalies,
            decoder=base.decoder,
            limits=base.settings.limits,
        )
    )
    jobs = JobService(
        clock=clock,
        runner=base.runner,
        audit=r.audit,
        guard=guard,
        ledger=j.ledger,
        views=views,
        watchers=j.watchers,
        registry=r.devices,
        quotas=r.quotas,
        leases=link.leases,
    )
    sessions = SessionService(
        clock=clock, guard=guard, gate=r.gate, sessions=j.sessions, drivers=j.fleet
    )
    directory = DeviceDirectory(
        registry=r.devices,
        exports=r.exports,
        schedule=r.schedule,
        gate=r.gate,
        drivers=j.fleet,
        runner=base.runner,
        clock=clock,
        anomalies=r.anomalies,
    )
    admin = DeviceAdmin(
        facility=base.facility,
        registry=r.devices,
        gate=r.gate,
        connections=link.attestor,
        wakeups=r.wakeups,
        clock=clock,
        metrics=base.metrics,
    )
    return Services(
        submission=submission,
        jobs=jobs,
        sessions=sessions,
        directory=directory,
        device_admin=admin,
        audit=AuditReader(base.runner),
    )


def _servicers(base: Foundation, r: Registries, s: Services) -> Servicers:
    return Servicers(
        jobs=JobServicer(jobs=s.jobs, submission=s.submission, sessions=s.sessions),
        devices=DeviceServicer(s.directory),
        device_admin=DeviceAdminServicer(s.device_admin),
        audit=AuditServicer(s.audit),
        access_admin=AccessAdminServicer(
            access=r.access, schedule=r.schedule, registry=r.devices, clock=base.clock
        ),
    )
