"""The upper floors of the graph: the driver link, the domain services and the gRPC servicers."""

from __future__ import annotations

from broker.anomaly.canary import CanaryRunner
from broker.audit.consistency import ConsistencyProver
from broker.audit.outages import OutageAudit
from broker.audit.proofs import InclusionProofs
from broker.audit.service import AuditReader
from broker.audit.signer import CheckpointSigner
from broker.audit.witnesses import CosignatureDesk
from broker.devices.admin import DeviceAdmin
from broker.devices.directory import DeviceDirectory
from broker.gauges import DeviceGauges
from broker.grpc.access import AccessAdminServicer
from broker.grpc.admin import DeviceAdminServicer
from broker.grpc.audit import AuditServicer
from broker.grpc.credentials import CredentialServicer
from broker.grpc.devices import DeviceServicer
from broker.grpc.grants import AccessRequestServicer
from broker.grpc.identity import EdgeIdentity
from broker.grpc.interceptor import EdgeInterceptor
from broker.grpc.jobs import JobServicer
from broker.grpc.server import Servicers
from broker.jobs.guard import CallerGuard
from broker.jobs.result_proofs import ResultProofService
from broker.jobs.selection import DeviceSelection
from broker.jobs.service import JobService
from broker.jobs.session_service import SessionService
from broker.jobs.submit import Submission, SubmitDeps
from broker.jobs.views import JobViews
from broker.link.admission import HelloAdmission
from broker.link.attestor import Attestor
from broker.link.dispatcher import Dispatcher
from broker.link.door import LinkDoor
from broker.link.hub import DriverHub
from broker.link.leases import LeaseKeeper
from broker.link.pipeline import DispatchDecisions, PendingLeases
from broker.link.replicas import ReplicaRoster
from broker.link.rights import SharedDriverView
from broker.scrape.gate import ScrapeGate
from broker.wiring.parts import Foundation, JobParts, LinkParts, Registries, Services
from broker.wiring.replicas import ReplicaSync
from broker.wiring.rights import dispatch_rights


def link_parts(base: Foundation, r: Registries, j: JobParts) -> LinkParts:
    clock, metrics, timing = base.clock, base.metrics, base.settings.timing
    door = LinkDoor(
        audit=r.audit,
        metrics=metrics,
        clock=clock,
        window_seconds=timing.link_refusal_audit_seconds,
    )
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
        door=door,
    )
    canary = CanaryRunner(base.settings.anomaly, r.anomalies, metrics)
    roster = ReplicaRoster(base.runner)
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
        door=door,
        replicas=roster,
    )
    decisions = DispatchDecisions(gate=r.gate, leases=leases, metrics=metrics)
    pending = PendingLeases(
        fleet=j.fleet,
        registry=r.devices,
        schedule=r.schedule,
        decisions=decisions,
        leases=leases,
        clock=clock,
    )
    rights = dispatch_rights(base, r.devices)
    dispatcher = Dispatcher(
        link=base.link,
        fleet=j.fleet,
        registry=r.devices,
        records=r.records,
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
        decisions=decisions,
        pending=pending,
        rights=rights,
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

    replicas = ReplicaSync(
        scheduler=j.scheduler,
        records=r.records,
        registry=r.devices,
        connections=attestor,
        wakeups=r.wakeups,
        ledger=j.ledger,
        clock=clock,
        poll_seconds=timing.replica_poll_seconds,
    )

    async def schedule_tick() -> None:
        """Move queues whose reservation or maintenance windows opened or closed; end streams
        whose grant expired (no record changes when one does)."""
        r.streams.recheck()
        for device_id in r.schedule.scheduled_devices(clock.now()):
            r.wakeups.kick(device_id)

    hub = DriverHub(
        link=base.link,
        fleet=j.fleet,
        attestor=attestor,
        leases=leases,
        admission=HelloAdmission(timing=timing, clock=clock),
        door=door,
        clock=clock,
        metrics=metrics,
        timing=timing,
        wakeups=r.wakeups,
        ticks=[
            gauges.refresh,
            replicas.poll,  # other replicas' changes, when no notification brought them
            # Rights of devices no longer attested here go back; see who holds the others.
            lambda: rights.review(lambda device_id: j.fleet.attested(device_id, clock.now())),
            signer.tick,
            schedule_tick,
            r.requests.expire_due,
            j.sessions.expire,
            r.front_door.flush,
            r.call_limits.flush,
            r.refusals.flush,
            j.decode_gate.flush,
            j.admission.flush,
            OutageAudit(base.runner.health, r.audit).flush,
        ],
    )
    return LinkParts(
        rights=rights,
        attestor=attestor,
        leases=leases,
        dispatcher=dispatcher,
        hub=hub,
        door=door,
        signer=signer,
        gauges=gauges,
        replicas=replicas,
        roster=roster,
    )


def services(base: Foundation, r: Registries, j: JobParts, link: LinkParts) -> Services:
    clock = base.clock
    # Devices attested in another process sharing the store count as attested here too.
    drivers = SharedDriverView(j.fleet, link.rights)
    guard = CallerGuard(
        grants=r.grants,
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
        drivers=drivers,
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
                drivers=drivers,
                has_room=j.admission.has_room,
            ),
            sessions=j.sessions,
            quotas=r.quotas,
            ledger=j.ledger,
            views=views,
            drivers=drivers,
            wakeups=r.wakeups,
            anomalies=r.anomalies,
            decoder=base.decoder,
            limits=base.settings.limits,
            decode_gate=j.decode_gate,
            admission=j.admission,
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
        clock=clock, guard=guard, gate=r.gate, sessions=j.sessions, drivers=drivers
    )
    directory = DeviceDirectory(
        registry=r.devices,
        exports=r.exports,
        schedule=r.schedule,
        gate=r.gate,
        drivers=j.fleet,
        elsewhere=link.rights.elsewhere,
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
        refusals=r.refusals,
    )
    cosignatures = CosignatureDesk(
        runner=base.runner,
        audit=r.audit,
        witnesses=base.witness_keys,
        log_key_id=base.audit_key.public_key.key_id,
        metrics=base.metrics,
    )
    return Services(
        submission=submission,
        jobs=jobs,
        sessions=sessions,
        directory=directory,
        device_admin=admin,
        audit=AuditReader(base.runner),
        result_proofs=ResultProofService(
            jobs=jobs,
            proofs=InclusionProofs(
                runner=base.runner,
                sign_now=lambda: link.signer.tick(force=True),
                cosignatures=cosignatures,
            ),
        ),
        cosignatures=cosignatures,
        proofs=ConsistencyProver(base.runner),
    )


def servicers(base: Foundation, r: Registries, s: Services) -> Servicers:
    return Servicers(
        jobs=JobServicer(
            jobs=s.jobs, submission=s.submission, sessions=s.sessions, proofs=s.result_proofs
        ),
        devices=DeviceServicer(s.directory),
        device_admin=DeviceAdminServicer(s.device_admin),
        audit=AuditServicer(s.audit, s.cosignatures, s.proofs),
        access_admin=AccessAdminServicer(
            access=r.access, schedule=r.schedule, registry=r.devices, clock=base.clock
        ),
        credentials=CredentialServicer(r.credentials),
        access_requests=AccessRequestServicer(r.requests),
    )


def edge(base: Foundation, r: Registries) -> EdgeInterceptor:
    return EdgeInterceptor(edge_identity(base, r), r.streams, r.call_limits, base.metrics)


def scrape_gate(base: Foundation, r: Registries) -> ScrapeGate:
    """Who may read /metrics: the gRPC edge's identity checks, plus the scraper role."""
    return ScrapeGate(identity=edge_identity(base, r), front_door=r.front_door)


def edge_identity(base: Foundation, r: Registries) -> EdgeIdentity:
    return EdgeIdentity(
        client_ca=base.client_ca,
        facility=lambda: base.facility.current,
        grants=r.grants,
        credentials=r.credentials,
        front_door=r.front_door,
        clock=base.clock,
    )
