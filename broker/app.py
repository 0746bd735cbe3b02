"""Composition root of the broker process: wires implementations to ports and runs them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from attestation.keys import load_private_key
from broker.attestor import Attestor
from broker.circuits import IsolatedDecoder
from broker.clock import Clock, SystemClock
from broker.devices import DeviceDirectory
from broker.dispatcher import Dispatcher
from broker.facility import FacilityRef
from broker.fleet import Fleet
from broker.grpc_edge import DeviceServicer, EdgeInterceptor, JobServicer
from broker.hub import DriverHub
from broker.ledger import JobLedger
from broker.link import DriverLink
from broker.metrics import BrokerMetrics
from broker.service import JobService
from broker.settings import BrokerSettings
from broker.store import open_store
from broker.store.runner import StoreRunner
from broker.watch import JobWatchers
from qtestbed.v1 import devices_pb2_grpc, jobs_pb2_grpc

log = logging.getLogger(__name__)


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
        self.decoder = IsolatedDecoder()
        self._tasks: list[asyncio.Task[None]] = []
        self._server: grpc.aio.Server | None = None
        self._link: DriverLink | None = None
        self._metrics_http: object | None = None
        self.addresses: BrokerAddresses | None = None

    async def start(self) -> BrokerAddresses:
        await self.runner.call(self.runner.store.migrate)
        await asyncio.to_thread(self.decoder.start)
        timing = self.settings.timing
        link = self._link = DriverLink(self.settings.link_listen)
        dispatcher = Dispatcher(
            link=link, fleet=self.fleet, facility=self.facility, ledger=self.ledger, timing=timing
        )
        attestor = Attestor(
            link=link,
            fleet=self.fleet,
            facility=self.facility,
            ledger=self.ledger,
            timing=timing,
            on_attested=dispatcher.kick,
        )
        dispatcher.attestor = attestor
        hub = DriverHub(
            link=link, fleet=self.fleet, attestor=attestor, dispatcher=dispatcher, timing=timing
        )
        hub.on_tick.append(self._refresh_queue_gauges)
        self.jobs = JobService(
            facility=self.facility,
            ledger=self.ledger,
            dispatcher=dispatcher,
            limits=self.settings.limits,
            decoder=self.decoder,
        )
        grpc_address = await self._start_grpc(
            DeviceDirectory(facility=self.facility, fleet=self.fleet, ledger=self.ledger)
        )
        host, port = _split(self.settings.metrics_listen)
        http = self.metrics.serve(host, port)
        self._metrics_http = http
        for coro in (hub.receive_forever(), hub.tick_forever(), dispatcher.run()):
            self._tasks.append(asyncio.create_task(coro))
        self.addresses = BrokerAddresses(
            grpc=grpc_address,
            link=link.endpoint,
            metrics=f"http://{host}:{http.server_port}/metrics",
        )
        log.info("broker listening: grpc %s, link %s, metrics %s", *self._addr_tuple())
        return self.addresses

    def _addr_tuple(self) -> tuple[str, str, str]:
        assert self.addresses is not None
        return self.addresses.grpc, self.addresses.link, self.addresses.metrics

    async def _start_grpc(self, directory: DeviceDirectory) -> str:
        s = self.settings
        server = grpc.aio.server(
            interceptors=[EdgeInterceptor(lambda n: n in self.facility.current.principals)],
            options=[
                ("grpc.max_receive_message_length", s.max_message_bytes),
                ("grpc.max_send_message_length", s.max_message_bytes),
            ],
        )
        jobs_pb2_grpc.add_JobServiceServicer_to_server(JobServicer(self.jobs), server)
        devices_pb2_grpc.add_DeviceServiceServicer_to_server(DeviceServicer(directory), server)
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        key_pem = load_private_key(s.server_key).to_pem()
        creds = grpc.ssl_server_credentials(
            [(key_pem, s.server_cert.read_bytes())],
            root_certificates=s.ca_cert.read_bytes(),
            require_client_auth=True,
        )
        host, _ = _split(s.listen)
        port = server.add_secure_port(s.listen, creds)
        await server.start()
        for service in ("", "qtestbed.v1.JobService", "qtestbed.v1.DeviceService"):
            await health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
        self._server = server
        return f"{host}:{port}"

    async def _refresh_queue_gauges(self) -> None:
        depths = await self.runner.call(self.runner.store.queue_depths)
        for device_id in self.facility.current.devices:
            self.metrics.queue_depth.labels(device_id).set(depths.get(device_id, 0))

    def reload_facility(self) -> None:
        try:
            self.facility.reload()
            log.info("facility file reloaded")
        except ValueError as exc:
            log.error("facility reload refused, keeping the previous one: %s", exc)

    async def stop(self, grace: float = 2.0) -> None:
        if self._server is not None:
            await self._server.stop(grace)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
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
