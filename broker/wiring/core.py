"""The lower floors of the graph: registries, the clearance gate and the job parts."""

from __future__ import annotations

import logging

from broker.access.call_limits import CallLimits
from broker.access.clearance import ClearanceGate
from broker.access.credentials import CredentialBook
from broker.access.front_door import FrontDoor
from broker.access.grants import Grants
from broker.access.open_streams import OpenStreams
from broker.access.quota import Quotas
from broker.access.records import AccessRecords
from broker.access.refusals import AccessRefusals
from broker.access.registry import AccessRegistry
from broker.access.requests import AccessRequests
from broker.anomaly.monitor import AnomalyMonitor
from broker.audit.log import AuditLog
from broker.audit.refusals import RefusalLog
from broker.devices.export_class import ExportClasses
from broker.devices.operations import DeviceSchedule
from broker.devices.registry import DeviceRegistry
from broker.jobs.admission import SubmissionAdmission
from broker.jobs.decode_gate import DecodeGate
from broker.jobs.ledger import JobLedger, JobObservers
from broker.jobs.model import Job
from broker.jobs.scheduler import Scheduler
from broker.jobs.session_model import Session
from broker.jobs.sessions import SessionManager
from broker.jobs.usage import UsageTracker
from broker.jobs.wakeups import DispatchWakeups
from broker.jobs.watch import JobWatchers
from broker.link.fleet import Fleet
from broker.wiring.parts import Foundation, JobParts, Registries


def registries(base: Foundation) -> Registries:
    clock, metrics, runner = base.clock, base.metrics, base.runner
    audit = AuditLog(runner, clock)
    anomalies = AnomalyMonitor(
        audit=audit, clock=clock, metrics=metrics, settings=base.settings.anomaly
    )
    wakeups = DispatchWakeups()
    devices = DeviceRegistry(
        runner=runner, clock=clock, audit=audit, trust_anchor=base.facility.current.ca_pem
    )
    fleet = Fleet()  # here, not with the job parts: the export classes read its connections
    exports = ExportClasses(
        profile=base.export_profile,
        registry=devices,
        connections=fleet,
        clock=clock,
        audit=audit,
        metrics=metrics,
        on_crossing=anomalies.export_crossing,
    )

    streams = OpenStreams(on_end=lambda reason, who: call_limits.stream_ended(reason, who))

    def kick_all() -> None:  # an access change may let any queue move
        for device in devices.all():
            wakeups.kick(device.device_id)

    def end_refused_streams() -> None:  # an access change, here or on another replica
        streams.end(credentials.revoked_serials())
        streams.recheck()

    records = AccessRecords(
        runner=runner,
        clock=clock,
        audit=audit,
        metrics=metrics,
        on_change=[kick_all, end_refused_streams],
    )
    refusals = AccessRefusals(
        audit=audit,
        metrics=metrics,
        clock=clock,
        window_seconds=base.settings.timing.front_door_audit_seconds,
    )
    access = AccessRegistry(records, facility=lambda: base.facility.current, refusals=refusals)
    grants = Grants(records, clock=clock, facility=lambda: base.facility.current)
    credentials = CredentialBook(
        records,
        runner=runner,
        clock=clock,
        client_ca=base.client_ca,
        facility=lambda: base.facility.current,
        access=access,
    )
    call_limits = CallLimits(
        base.settings.calls,
        streams=streams,
        metrics=metrics,
        audit=audit,
        clock=clock,
        window_seconds=base.settings.timing.front_door_audit_seconds,
    )
    schedule = DeviceSchedule(
        records, clock=clock, device_exists=lambda device_id: devices.get(device_id) is not None
    )
    gate = ClearanceGate(
        engine=base.policy,
        facility=base.facility,
        grants=grants,
        schedule=schedule,
        exports=exports,
    )
    return Registries(
        fleet=fleet,
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
        credentials=credentials,
        streams=streams,
        call_limits=call_limits,
        front_door=FrontDoor(
            audit=audit,
            metrics=metrics,
            anomalies=anomalies,
            clock=clock,
            window_seconds=base.settings.timing.front_door_audit_seconds,
        ),
        grants=grants,
        refusals=refusals,
        requests=AccessRequests(
            records=records,
            grants=grants,
            refusals=refusals,
            devices=devices,
            gate=gate,
            clock=clock,
            facility=lambda: base.facility.current,
        ),
    )


def job_parts(base: Foundation, r: Registries) -> JobParts:
    settings = base.settings
    scheduler = Scheduler(
        settings.scheduling,
        weight_of=lambda project: p.weight if (p := r.access.project(project)) else 1,
        runner=base.runner,
    )
    fleet = r.fleet

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

    watchers = JobWatchers(
        scheduler.take_moves,
        position_every=settings.calls.position_update_seconds,
        principal_rate=settings.calls.position_updates_per_principal,
    )
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
        ledger=JobLedger(base.runner, base.metrics, watchers, observers, price=scheduler.price),
        decode_gate=DecodeGate(
            settings=settings.decoding,
            metrics=base.metrics,
            refusals=RefusalLog(
                kind="decode.refused",
                what="circuit decodes past a principal's share",
                audit=r.audit,
                clock=base.clock,
                logger=logging.getLogger("broker.jobs.decode_gate"),
                window_seconds=settings.timing.front_door_audit_seconds,
            ),
        ),
        admission=SubmissionAdmission(
            settings=settings.admission,
            clock=base.clock,
            metrics=base.metrics,
            audit=r.audit,
            store_depth=lambda: base.runner.depth,
            lane_depths=scheduler.lane_depths,
            weight_of=scheduler.weight_of,
        ),
    )
