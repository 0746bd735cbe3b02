"""Composition root of the broker process: wires implementations to ports and runs them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from attestation.keys import load_private_key
from broker.access.clearance import ClearanceGate
from broker.access.facility import FacilityRef
from broker.access.registry import AccessRegistry
from broker.anomaly.canary import CanaryRunner
from broker.anomaly.detectors import DEVICE_DETECTORS
from broker.anomaly.monitor import AnomalyMonitor
from broker.audit.checkpointer import AuditCheckpointer, AuditLogError
from broker.audit.model import Checkpoint
from broker.audit.verify import iter_entries
from broker.clock import Clock, SystemClock
from broker.devices.admin import AdminService
from broker.devices.directory import DeviceDirectory
from broker.devices.model import DeviceStatus
from broker.devices.registry import DeviceRegistry
from broker.grpc.access import AccessAdminServicer
from broker.grpc.admin import AuditServicer, DeviceAdminServicer
from broker.grpc.interceptor import DeviceServicer, EdgeInterceptor, JobServicer
from broker.jobs.circuits import BrokerDecoder, IsolatedDecoder
from broker.jobs.ledger import JobLedger
from broker.jobs.model import Job, JobState
from broker.jobs.scheduler import Scheduler
from broker.jobs.service import JobService
from broker.jobs.session_model import Session
from broker.jobs.sessions import SessionManager
from broker.jobs.usage import UsageTracker
from broker.jobs.watch import JobWatchers
from broker.link.attestor import Attestor
from broker.link.dispatcher import Dispatcher
from broker.link.fleet import Fleet
from broker.link.hub import DriverHub
from broker.link.socket import DriverLink
from broker.metrics import BrokerMetrics
from broker.policy.engine import PolicyEngine, PolicyError
from broker.policy.export_control import load_profile
from broker.settings import BrokerSettings
from broker.store import StoreError, open_store
from broker.store.runner import StoreRunner
from qtestbed.v1 import access_pb2_grpc, admin_pb2_grpc, devices_pb2_grpc, jobs_pb2_grpc

log = logging.getLogger(__name__)

# Most queued jobs of one device read back when re-syncing the scheduler with the store.
_MAX_QUEUE_READ = 100_000


@dataclass(frozen=True, kw_only=True, slots=True)
class BrokerAddresses:
    """Where a started broker listens (ports read back after binding port 0)."""

    grpc: str
    link: str
    metrics: str


class Broker:
    def __init__(self, settings: BrokerSettings, *, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self.metrics = BrokerMetrics()
        self.facility = FacilityRef(settings.facility)
        self.runner = StoreRunner(open_store(settings.store))
        self.ledger = JobLedger(self.runner, self.metrics, JobWatchers(), self.clock)
        self.fleet = Fleet()
        # Refuse to start on a bad band table or policy set rather than decide wrongly.
        self.export_profile = load_profile(settings.export_control_profile)
        self.policy_engine = PolicyEngine.load_files(settings.policies)
        self.decoder = IsolatedDecoder()
        # The broker's TLS key also signs audit checkpoints: verifiable with its certificate.
        self.broker_key = load_private_key(settings.server_key)
        self._tasks: list[asyncio.Task[None]] = []
        self._reload: asyncio.Task[bool] | None = None  # the latest SIGHUP reload
        self._zeroed: set[str] = set()  # devices whose event counters are exported
        self._server: grpc.aio.Server | None = None
        self._link: DriverLink | None = None
        self._metrics_http: object | None = None
        self.addresses: BrokerAddresses | None = None

    async def start(self) -> BrokerAddresses:
        await self.runner.call(self.runner.store.migrate)
        await asyncio.to_thread(self.decoder.start)
        registry = self.registry = DeviceRegistry(
            ledger=self.ledger,
            store=self.runner.store,
            trust_anchor=self.facility.current.ca_pem,
            export_profile=self.export_profile,
        )
        await registry.load()
        await registry.seed(self.facility.current.seed_devices)
        self.access = AccessRegistry(
            self.runner,
            facility=lambda: self.facility.current,
            device_exists=lambda device_id: registry.get(device_id) is not None,
            now=self.clock.now,
            metrics=self.metrics,
        )
        await self.access.load()
        await self.access.seed(self.facility.current)
        self.anomalies = AnomalyMonitor(self.ledger, self.settings.anomaly)
        registry.on_export_crossing.append(self.anomalies.export_crossing)
        self.usage = UsageTracker(
            self.metrics,
            window_seconds=self.settings.anomaly.utilization_window_seconds,
            tier_of=lambda device_id: d.tier if (d := registry.get(device_id)) else "",
        )
        self.ledger.on_finished.append(self.usage.job_finished)
        self.scheduler = Scheduler(
            self.settings.scheduling,
            weight_of=lambda project: p.weight if (p := self.access.project(project)) else 1,
        )
        self.scheduler.load(await self._queued_jobs())
        self.ledger.on_change.append(self.scheduler.observe)
        self.ledger.on_finished.append(self.scheduler.finished)
        self.checkpointer = AuditCheckpointer(
            self.broker_key,
            every_entries=self.settings.timing.checkpoint_every_entries,
            every_seconds=self.settings.timing.checkpoint_every_seconds,
            existing=await self.runner.call(self.runner.store.checkpoints),
        )
        await self._checkpoint()
        link = self._link = DriverLink(
            self.settings.link_listen,
            secret_key=self.settings.link_secret_key,
            clients=self.settings.link_clients,
        )
        hub = self._wire(link, registry)
        await self.sessions.load()
        grpc_address = await self._start_grpc(self._servicers(registry))
        host, port = _split(self.settings.metrics_listen)
        http = self.metrics.serve(host, port)
        self._metrics_http = http
        for coro in (hub.receive_forever(), hub.tick_forever(), hub.dispatcher.run()):
            self._tasks.append(asyncio.create_task(coro))
        self.addresses = BrokerAddresses(
            grpc=grpc_address,
            link=link.endpoint,
            metrics=f"http://{host}:{http.server_port}/metrics",
        )
        log.info("broker listening: grpc %s, link %s, metrics %s", *self._addr_tuple())
        return self.addresses

    def _wire(self, link: DriverLink, registry: DeviceRegistry) -> DriverHub:
        timing = self.settings.timing
        gate = self.gate = ClearanceGate(
            engine=self.policy_engine, facility=self.facility, registry=registry, access=self.access
        )
        dispatcher = Dispatcher(
            link=link,
            fleet=self.fleet,
            registry=registry,
            gate=gate,
            access=self.access,
            ledger=self.ledger,
            timing=timing,
            scheduler=self.scheduler,
            canary=CanaryRunner(self.settings.anomaly, self.anomalies, self.metrics),
        )
        sessions = self.sessions = SessionManager(
            self.ledger,
            self.settings.scheduling,
            busy=self._session_busy,
            on_change=dispatcher.kick,
        )
        dispatcher.sessions = sessions
        self.ledger.on_finished.append(
            lambda job: sessions.touch(job.session_id) if job.session_id else None
        )
        attestor = self.attestor = Attestor(
            link=link,
            fleet=self.fleet,
            registry=registry,
            ledger=self.ledger,
            timing=timing,
            on_attested=dispatcher.kick,
            anomalies=self.anomalies,
        )
        dispatcher.attestor = attestor
        hub = DriverHub(
            link=link, fleet=self.fleet, attestor=attestor, dispatcher=dispatcher, timing=timing
        )
        hub.on_tick.append(self._refresh_gauges)
        hub.on_tick.append(self._checkpoint)
        hub.on_tick.append(self._access_tick)
        hub.on_tick.append(sessions.expire)
        self.access.on_change.append(lambda: self._kick_all(dispatcher))
        self.jobs = JobService(
            facility=self.facility,
            registry=registry,
            gate=gate,
            ledger=self.ledger,
            dispatcher=dispatcher,
            limits=self.settings.limits,
            decoder=BrokerDecoder(self.decoder),
            access=self.access,
            anomalies=self.anomalies,
            scheduler=self.scheduler,
            sessions=sessions,
        )
        return hub

    def _session_busy(self, session: Session) -> bool:
        """Whether the session has a job waiting or running (then it is not idle)."""
        if self.scheduler.has_session_jobs(session.device_id, session.session_id):
            return True
        return any(
            c.leased is not None and c.leased.session_id == session.session_id
            for c in self.fleet.for_device(session.device_id)
        )

    async def _queued_jobs(self) -> list[Job]:
        """Every QUEUED job in the store (pages of 1,000, newest first)."""
        store = self.runner.store
        found: list[Job] = []
        before: int | None = None
        while True:
            page = await self.runner.call(
                store.list_jobs, states=[JobState.QUEUED], limit=1000, before_seq=before
            )
            found.extend(job for _, job in page)
            if len(page) < 1000:
                return found
            before = page[-1][0]

    def _kick_all(self, dispatcher: Dispatcher) -> None:
        for device in self.registry.all():
            dispatcher.kick(device.device_id)

    async def _access_tick(self) -> None:
        """Pick up changes other replicas made, and move queues whose windows opened or closed."""
        if await self.access.refresh():
            return  # the reload already kicked every device
        now = self.clock.now()
        for device_id in self.access.scheduled_devices(now):
            self.jobs.dispatcher.kick(device_id)

    def _servicers(self, registry: DeviceRegistry) -> list[tuple[Any, Any]]:
        admin = AdminService(
            facility=self.facility,
            registry=registry,
            gate=self.gate,
            attestor=self.attestor,
            ledger=self.ledger,
            store=self.runner.store,
        )
        directory = DeviceDirectory(
            registry=registry,
            gate=self.gate,
            fleet=self.fleet,
            ledger=self.ledger,
            anomalies=self.anomalies,
        )
        return [
            (jobs_pb2_grpc.add_JobServiceServicer_to_server, JobServicer(self.jobs)),
            (devices_pb2_grpc.add_DeviceServiceServicer_to_server, DeviceServicer(directory)),
            (admin_pb2_grpc.add_DeviceAdminServiceServicer_to_server, DeviceAdminServicer(admin)),
            (admin_pb2_grpc.add_AuditServiceServicer_to_server, AuditServicer(admin)),
            (
                access_pb2_grpc.add_AccessAdminServiceServicer_to_server,
                AccessAdminServicer(self.access, registry),
            ),
        ]

    def _addr_tuple(self) -> tuple[str, str, str]:
        assert self.addresses is not None
        return self.addresses.grpc, self.addresses.link, self.addresses.metrics

    async def _start_grpc(self, servicers: list[tuple[Any, Any]]) -> str:
        s = self.settings
        server = grpc.aio.server(
            interceptors=[EdgeInterceptor(self.access.principal)],
            options=[
                ("grpc.max_receive_message_length", s.max_message_bytes),
                ("grpc.max_send_message_length", s.max_message_bytes),
            ],
        )
        for add, servicer in servicers:
            add(servicer, server)
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        key_pem = self.broker_key.to_pem()
        creds = grpc.ssl_server_credentials(
            [(key_pem, s.server_cert.read_bytes())],
            root_certificates=s.ca_cert.read_bytes(),
            require_client_auth=True,
        )
        host, _ = _split(s.listen)
        port = server.add_secure_port(s.listen, creds)
        await server.start()
        services = (
            "JobService",
            "DeviceService",
            "DeviceAdminService",
            "AuditService",
            "AccessAdminService",
        )
        for service in ("", *(f"qtestbed.v1.{name}" for name in services)):
            await health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
        self._server = server
        return f"{host}:{port}"

    async def _refresh_gauges(self) -> None:
        depths = await self.runner.call(self.runner.store.queue_depths)
        now = self.clock.now()
        states: dict[tuple[str, str], int] = {}
        for device in self.registry.all():
            depth = depths.get(device.device_id, 0)
            self.metrics.queue_depth.labels(device.device_id).set(depth)
            self._zero_series(device.device_id)
            if depth != self.scheduler.depth(device.device_id):
                # Another replica queued or took jobs: the store is the truth.
                queued = await self.runner.call(
                    self.runner.store.queued_jobs, device.device_id, _MAX_QUEUE_READ
                )
                self.scheduler.replace_device(device.device_id, queued)
            attested = self.fleet.attested(device.device_id, now)
            key = (device.status.value, "yes" if attested else "no")
            states[key] = states.get(key, 0) + 1
        for status in DeviceStatus:
            for attested_label in ("yes", "no"):
                count = states.get((status.value, attested_label), 0)
                self.metrics.device_states.labels(status.value, attested_label).set(count)
        running = [c.leased for c in self.fleet if c.leased is not None and not c.running_canary]
        self.usage.refresh(now, [d.device_id for d in self.registry.all()], running)

    def _zero_series(self, device_id: str) -> None:
        """Export per-device event counters at 0 before their first event, so that alerting on
        `increase()` sees the first quarantine or anomaly of a device too."""
        if device_id in self._zeroed:
            return
        self._zeroed.add(device_id)
        m = self.metrics
        m.quarantines.labels(device_id)
        m.revocations.labels(device_id)
        m.nonce_replays.labels(device_id)
        for detector in DEVICE_DETECTORS:
            m.anomalies.labels(detector, device_id)

    async def _checkpoint(self, *, force: bool = False) -> None:
        try:
            made = await self.runner.call(self._checkpoint_step, force)
        except AuditLogError as exc:
            # The log no longer matches what was signed: never sign over it; shout instead.
            log.error("audit log integrity check failed, not checkpointing: %s", exc)
            return
        except StoreError as exc:
            # With several replicas on one database another may have signed this tree size
            # first; the log is covered either way, and the next checkpoint will be larger.
            log.warning("checkpoint not stored (%s); the next one will cover these entries", exc)
            return
        if made is not None:
            self.metrics.checkpoints.inc()

    def _checkpoint_step(self, force: bool) -> Checkpoint | None:
        """On the store's thread: feed the new entries, sign a checkpoint when one is due."""
        store = self.runner.store
        self.checkpointer.feed(iter_entries(store, after_seq=self.checkpointer.last_seq))
        now = self.clock.now()
        has_new = self.checkpointer.tree_size > self.checkpointer.last_checkpoint_size
        if not (self.checkpointer.due_at(now) or (force and has_new)):
            return None
        checkpoint = self.checkpointer.make(now)
        store.add_checkpoint(checkpoint)
        return checkpoint

    def reload_facility(self) -> None:
        """SIGHUP (on the event loop): reload everything; see `reload`."""
        self._reload = asyncio.get_running_loop().create_task(self.reload())

    async def reload(self) -> bool:
        """Re-read the facility file, driver link keys and policies; a bad file is refused and
        the one in force kept. True when everything reloaded."""
        ok = True
        try:
            self.facility.reload()
            if self._link is not None:
                self._link.reload_clients()
            added = await self.access.seed(self.facility.current)
            log.info("facility file and driver link keys reloaded (%d new access records)", added)
        except ValueError as exc:
            log.error("facility reload refused, keeping the previous one: %s", exc)
            ok = False
        return await self.reload_policies() and ok

    async def reload_policies(self) -> bool:
        """Swap in the policy file if it validates; otherwise keep the old set, count, audit."""
        try:
            engine = PolicyEngine.load_files(self.settings.policies)
        except PolicyError as exc:
            self.metrics.policy_reload_failures.inc()
            detail = {"file": str(self.settings.policies), "errors": exc.errors[:20]}
            await self.ledger.audit(
                self.ledger.event("policy.reload_refused", "broker", "", detail)
            )
            log.error("policy reload refused, keeping the policies in force: %s", exc)
            return False
        self.policy_engine = self.gate.engine = engine
        await self.ledger.audit(
            self.ledger.event(
                "policy.reloaded", "broker", "", {"policies": sorted(engine.policies)}
            )
        )
        return True

    async def stop(self, grace: float = 2.0) -> None:
        if self._server is not None:
            await self._server.stop(grace)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._tasks:
            await self.anomalies.drain()
            await self._checkpoint(force=True)  # nothing written before shutdown goes unsigned
        if self._link is not None:
            self._link.close()
        http = self._metrics_http
        if http is not None:
            http.shutdown()  # type: ignore[attr-defined]
            http.server_close()  # type: ignore[attr-defined]
        self.runner.close()
        self.decoder.close()


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)
