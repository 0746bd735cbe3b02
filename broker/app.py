"""The broker process: builds the object graph (`broker.wiring`) and runs it; SIGHUP reloads
the facility file, the driver link keys and the policies."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health

from attestation.keys import load_private_key
from attestation.pki import cert_from_pem
from broker.access.facility import FacilityRef
from broker.audit.signer import DamagedAuditLog
from broker.audit.witnesses import WitnessKeys
from broker.ca_keys import refuse_readable_ca_keys
from broker.clock import Clock, SystemClock
from broker.grpc.handshakes import HandshakeWatcher
from broker.grpc.health_port import HealthPort
from broker.grpc.server import Tls, start_server
from broker.jobs.circuits import BrokerDecoder, DecoderPool
from broker.link.socket import DriverLink
from broker.metrics import BrokerMetrics
from broker.policy.engine import PolicyEngine, PolicyError
from broker.policy.export_control import load_profile
from broker.scrape.server import MetricsEndpoint
from broker.scrape.tls import server_context
from broker.settings import BrokerSettings
from broker.store import StoreError, is_postgres_url, open_store
from broker.store.runner import StoreRunner
from broker.wiring import Components, Foundation, build

log = logging.getLogger(__name__)

# How long a broker on a shared store waits at start to hear other replicas before serving.
_LISTEN_WAIT_S = 10.0


@dataclass(frozen=True, kw_only=True, slots=True)
class BrokerAddresses:
    """Where a started broker listens (ports read back after binding port 0)."""

    grpc: str
    link: str
    metrics: str
    health: str = ""  # the plaintext health port (host:port), when health_listen is set


class Broker:
    def __init__(self, settings: BrokerSettings, *, clock: Clock | None = None) -> None:
        # Before anything else: never run beside a CA key it could read (broker.ca_keys).
        refuse_readable_ca_keys(settings)
        self.settings = settings
        self.clock = clock or SystemClock()
        self.metrics = BrokerMetrics()
        self.facility = FacilityRef(settings.facility)
        self.runner = StoreRunner(open_store(settings.store))
        self.runner.health.on_change(self._store_health_changed)
        # Refuse to start on a bad band table or policy set rather than decide wrongly.
        self.export_profile = load_profile(settings.export_control_profile)
        self.policy_engine = PolicyEngine.load_files(settings.policies)
        decoding = settings.decoding
        self.decoder = DecoderPool(decoding.pool_size(), deadline=decoding.deadline())
        # The broker's TLS key also signs audit checkpoints: verifiable with its certificate.
        self.broker_key = load_private_key(settings.server_key)
        # The broker needs the issuing CA's certificate only, never its key.
        self.client_ca = cert_from_pem(settings.client_ca_cert.read_bytes())
        self.witness_keys = WitnessKeys.load(settings.witnesses)
        self.components: Components | None = None
        self.addresses: BrokerAddresses | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._reload: asyncio.Task[bool] | None = None  # the latest SIGHUP reload
        self._server: grpc.aio.Server | None = None
        self._health = health.aio.HealthServicer()
        self._health_port: HealthPort | None = None
        self._link: DriverLink | None = None
        self._metrics_endpoint: MetricsEndpoint | None = None
        self._handshakes: HandshakeWatcher | None = None

    def _store_health_changed(self, available: bool) -> None:
        self.metrics.store_available.set(1 if available else 0)
        if not available:
            self.metrics.store_outages.inc()

    async def start(self) -> BrokerAddresses:
        try:  # an older schema is upgraded by `qtestbed migrate`, never by a starting broker
            await self.runner.call(self.runner.store.open_schema)
        except StoreError:
            await self.stop()
            raise
        link = self._link = DriverLink(
            self.settings.link_listen,
            secret_key=self.settings.link_secret_key,
            clients=self.settings.link_clients,
        )
        parts = self.components = build(self._foundation(link))
        try:
            await self._load(parts)
        except DamagedAuditLog:
            await self.stop()  # nothing is served yet: release the link, store and decoder
            raise
        await self._listen_to_replicas(parts)
        grpc_address = await self._serve(parts)
        self._warm_decoders()
        health_address = await self._serve_health(parts)
        metrics_url = self._serve_metrics(parts)
        hub = parts.link.hub
        for coro in (hub.receive_forever(), hub.tick_forever(), parts.link.dispatcher.run()):
            self._tasks.append(asyncio.create_task(coro))
        self.addresses = BrokerAddresses(
            grpc=grpc_address,
            link=link.endpoint,
            metrics=metrics_url,
            health=health_address,
        )
        a = self.addresses
        log.info("broker listening: grpc %s, link %s, metrics %s", a.grpc, a.link, a.metrics)
        return self.addresses

    def _warm_decoders(self) -> None:
        """Once calls are served, start the decoder children (each imports Qiskit, a second
        or more, at a lower priority): a submission that comes first waits for a child, and
        is checked exactly as later ones are. The in-process OpenQASM 2 parser is imported by
        the first such submission, on the decode executor: importing it here would hold the
        interpreter while the first calls are answered."""
        self.decoder.start_in_background()

    def _foundation(self, link: DriverLink) -> Foundation:
        return Foundation(
            settings=self.settings,
            clock=self.clock,
            metrics=self.metrics,
            runner=self.runner,
            facility=self.facility,
            audit_key=self.broker_key,
            witness_keys=self.witness_keys,
            client_ca=self.client_ca,
            policy=self.policy_engine,
            export_profile=self.export_profile,
            decoder=BrokerDecoder(self.decoder),
            link=link,
        )

    async def _load(self, parts: Components) -> None:
        """Read what the store holds, seed what the facility file adds, verify the audit log."""
        r, facility = parts.registries, self.facility.current
        await r.devices.load()
        await r.devices.seed(facility.seed_devices)
        await r.records.load()
        await r.access.seed(facility)
        await parts.jobs.scheduler.load()
        await parts.link.signer.start()
        await parts.jobs.sessions.load()

    async def _listen_to_replicas(self, parts: Components) -> None:
        """On a shared PostgreSQL store: hear other replicas' changes, and hold this replica's
        liveness lock before any lease is written (survivors recover a dead one's leases)."""
        if not is_postgres_url(self.settings.store):
            return  # and psycopg (a tenth of a second to import) is never loaded
        from broker.store.pg_events import ChangeListener
        from broker.store.postgres import PostgresStore

        store = self.runner.store
        if not isinstance(store, PostgresStore):
            return
        sync = parts.link.replicas
        listener = ChangeListener(
            store,
            replica_id=parts.link.roster.replica_id,
            on_change=sync.heard,
            on_gap=sync.gap,
        )
        sync.listening = lambda: listener.listening
        self._tasks += [asyncio.create_task(listener.run()), asyncio.create_task(sync.run())]
        try:
            await asyncio.wait_for(listener.wait_listening(), _LISTEN_WAIT_S)
        except TimeoutError:
            log.warning("not yet hearing other replicas' changes; polling until it does")

    async def _serve(self, parts: Components) -> str:
        s = self.settings
        tls = Tls(
            key_pem=self.broker_key.to_pem(),
            cert_pem=s.server_cert.read_bytes(),
            client_ca_pem=s.ca_cert.read_bytes(),
        )
        self._server, port = await start_server(
            s.listen,
            tls=tls,
            servicers=parts.servicers,
            interceptor=parts.edge,
            max_message_bytes=s.max_message_bytes,
            health_servicer=self._health,
            shared_port=s.server.workers > 1,
        )
        host, _ = _split(s.listen)
        return f"{host}:{port}"

    async def _serve_health(self, parts: Components) -> str:
        """The plaintext health port (broker.grpc.health_port), if the settings ask for one."""
        if not self.settings.health_listen:
            return ""
        self._health_port = HealthPort(self._health, parts.registries.front_door.refused)
        port = await self._health_port.start(
            self.settings.health_listen, shared_port=self.settings.server.workers > 1
        )
        host, _ = _split(self.settings.health_listen)
        return f"{host}:{port}"

    def _serve_metrics(self, parts: Components) -> str:
        """/metrics over mutual TLS, for the scraper identity only; its https address."""
        s = self.settings
        host, port = _split(s.metrics_listen)
        endpoint = self._metrics_endpoint = MetricsEndpoint(
            host=host,
            port=port,
            tls=server_context(cert=s.server_cert, key=s.server_key, root=s.ca_cert),
            gate=parts.scrape,
            registry=self.metrics.registry,
            loop=asyncio.get_running_loop(),
        )
        bound = endpoint.start()
        shown = f"[{host}]" if ":" in host else host
        return f"https://{shown}:{bound}/metrics"

    def watch_handshakes(self) -> None:
        """Count the TLS handshakes gRPC refuses, from its log on this process's standard
        error (see broker.grpc.handshakes); for the broker's own process only."""
        if self.components is None:
            raise RuntimeError("start the broker before watching its handshakes")
        front_door = self.components.registries.front_door
        loop = asyncio.get_running_loop()

        def refused(reason: str) -> None:  # on the watcher's thread: count on the loop's
            loop.call_soon_threadsafe(front_door.refused, reason, "")

        watcher = self._handshakes = HandshakeWatcher(refused)
        watcher.start()

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
            added = 0
            if self.components is not None:
                added = await self.components.registries.access.seed(self.facility.current)
            log.info("facility file and driver link keys reloaded (%d new access records)", added)
        except ValueError as exc:
            log.error("facility reload refused, keeping the previous one: %s", exc)
            ok = False
        return await self.reload_policies() and ok

    async def reload_policies(self) -> bool:
        """Swap in the policy file if it validates; otherwise keep the old set, count, audit."""
        if self.components is None:
            return False
        registries = self.components.registries
        try:
            engine = PolicyEngine.load_files(self.settings.policies)
        except PolicyError as exc:
            self.metrics.policy_reload_failures.inc()
            detail = {"file": str(self.settings.policies), "errors": exc.errors[:20]}
            await registries.audit.record("policy.reload_refused", "broker", "", detail)
            log.error("policy reload refused, keeping the policies in force: %s", exc)
            return False
        self.policy_engine = engine
        registries.gate.use_engine(engine)
        detail = {"policies": sorted(engine.policies)}
        await registries.audit.record("policy.reloaded", "broker", "", detail)
        return True

    async def stop(self, grace: float = 2.0) -> None:
        if self._health_port is not None:  # probes see NOT_SERVING while the rest stops
            await self._health_port.stop(grace)
        if self._server is not None:
            await self._server.stop(grace)
        if self._metrics_endpoint is not None:  # off the loop: scrapes in flight need it
            await asyncio.to_thread(self._metrics_endpoint.stop)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._tasks and self.components is not None:
            await self.components.registries.anomalies.drain()
            await self.components.registries.front_door.flush(force=True)
            await self.components.registries.call_limits.flush(force=True)
            await self.components.jobs.admission.flush(force=True)
            link = self.components.link
            if self._link is not None:
                link.door.socket_refusals(self._link.take_refusals())
            await link.door.flush(force=True)
            await self.components.jobs.decode_gate.flush(force=True)
            # Nothing written before shutdown goes unsigned.
            await self.components.link.signer.tick(force=True)
            await link.rights.close()  # another process may take its devices at once
        if self._link is not None:
            self._link.close()
        self.runner.close()
        if self.components is not None:
            self.components.jobs.decode_gate.close()
        self.decoder.close()
        # Last: the decoder's children inherited standard error (the watcher's pipe), and the
        # pipe ends only when its last writer has gone.
        if self._handshakes is not None:
            self._handshakes.stop()


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)
