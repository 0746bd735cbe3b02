"""The driver agent: the Attester for one device, and the only place its circuits run.

It connects to the broker's ROUTER with a DEALER, announces the device, answers attestation
challenges with signed evidence, heartbeats, runs leased jobs on its backend (in a worker
thread, so heartbeats keep flowing) and returns each result with a receipt signed by the
device key. When the broker falls silent it reconnects with a fresh routing id and attests
again, to the next of its broker endpoints when it has several (replicas sharing one store).
Each connection makes its own grant key pair, held in memory only and announced in its Hello;
lease grants arrive sealed to it and are opened before anything runs. It may hold up to
`max_leases` leases at once (`drivers.pipeline`), run one at a time in grant order: a run for a
connection that ended still finishes before the next lease starts, so a device that moves to
another replica never runs two jobs at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import secrets
import time
import uuid
from dataclasses import dataclass

import zmq
import zmq.asyncio
from qiskit import QuantumCircuit
from zmq.utils import z85

from attestation.dsse import Envelope
from attestation.evidence import EvidenceClaims, Measurements, make_evidence
from attestation.keys import SigningKey
from attestation.receipts import ReceiptClaims, result_digest, sign_receipt
from attestation.shot_memory import ShotMemory, ShotMemoryError, check_size
from drivers.backends import flip_bits
from drivers.circuits import decode_circuit
from drivers.config import DriverConfig
from drivers.faithful import Prepared, executed_circuit_digest, executed_circuit_text
from drivers.grants import GrantError, GrantKey, open_grant
from drivers.measure import measure
from drivers.pipeline import Answers, BusyClock, HeldLease, LeaseQueue
from drivers.plugins.api import BackendPlugin, Execution, RunOptions
from drivers.plugins.registry import plugin_source_root
from drivers.status import StatusFile
from drivers.watch import DeviceWatch
from qtestbed.shared.linkkeys import configure_client, load_keypair
from qtestbed.v1 import devices_pb2
from qtestbed.v1 import driver_link_pb2 as link_pb

log = logging.getLogger(__name__)


# How long a closing connection waits for the answers still being sent.
_ANSWER_DRAIN_SECONDS = 1.0


class DeviceNotAccepted(Exception):
    """The broker refused this device outright (not registered, or this link key is not
    authorised for it); retrying will not help."""


# Goodbyes after which reconnecting cannot help.
_FATAL_GOODBYES = (
    link_pb.GOODBYE_CODE_UNKNOWN_DEVICE,
    link_pb.GOODBYE_CODE_WRONG_KEY,
    link_pb.GOODBYE_CODE_NO_GRANT_KEY,
)


@dataclass(frozen=True, kw_only=True, slots=True)
class Ran:
    """What one device run gave, before its receipt is signed."""

    counts: dict[str, int]
    seconds: float
    executed: bytes
    memory: ShotMemory | None


@dataclass(frozen=True, kw_only=True, slots=True)
class _Executed:
    """A lease's run on the device: the circuit as prepared, what the result reports as the
    executed circuit (empty when it ran as sent), and the backend's answer."""

    prepared: Prepared
    text: bytes
    execution: Execution


class DriverAgent:
    def __init__(self, config: DriverConfig, key: SigningKey) -> None:
        self.config = config
        self.key = key
        self.backend: BackendPlugin = config.plugin
        self.watch = DeviceWatch(config.plugin, config.device, config.calibration_poll_seconds)
        self._plugin_root = plugin_source_root(config.plugin)
        self.certificate_chain = config.device_certificate.read_bytes()
        self.boot_epoch = uuid.uuid4().hex  # new per process: counters restart with it
        self.counter = 0
        self.evidence_digest = ""
        self.attested = False
        self._ctx = zmq.asyncio.Context()
        link_public, _secret = load_keypair(config.link_secret_key)
        self._link_key = z85.decode(link_public)  # lease grants are bound to it
        # This connection's grant key: a new one for every Hello, never reused or stored.
        self._grant_key = GrantKey.new()
        self._cancelling: asyncio.Task[bool] | None = None
        self.busy = BusyClock()  # how much of the time the device spends running jobs
        self._queue = LeaseQueue(self._execute, config.max_leases, self.busy)
        self._status = StatusFile(config.status_file, config.device.device_id)
        self._endpoint = 0  # which of config.brokers the next connection goes to
        self._answers = Answers()
        # Each held lease's circuit, decoded on arrival (or why it cannot run), until it runs.
        self._ahead: dict[str, QuantumCircuit | Exception] = {}

    @property
    def broker(self) -> str:
        return self.config.brokers[self._endpoint % len(self.config.brokers)]

    async def run(self, stop: asyncio.Event) -> None:
        """Stay connected until `stop` is set; reconnect whenever the broker goes quiet."""
        try:
            while not stop.is_set():
                await self.watch.wait_healthy(stop)
                if stop.is_set():
                    break
                await self._session(stop)
                if not stop.is_set():
                    # Its broker fell silent or let it go: try the next replica, if any.
                    self._endpoint += 1
                    log.warning("moving to broker %s", self.broker)
                    await asyncio.sleep(min(1.0, self.config.heartbeat_seconds))
        finally:
            await self._queue.stop()
            self._ctx.term()

    async def _session(self, stop: asyncio.Event) -> None:
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.ROUTING_ID, secrets.token_bytes(16))
        configure_client(sock, self.config.link_secret_key, self.config.broker_link_key)
        sock.connect(self.broker)
        self.attested = False
        # A new connection, a new grant key: a grant sealed for an earlier connection (which
        # another host on its route may also hold) never opens on this one, nor this one's there.
        self._grant_key = GrantKey.new()
        leaving = "driver shutting down"
        try:
            await self._send(sock, link_pb.LinkMessage(hello=self._hello()))
            leaving = await self._converse(sock, stop) or leaving
        finally:
            with contextlib.suppress(TimeoutError):  # answers of leases that ran, if it can
                await asyncio.wait_for(self._answers.drain(), _ANSWER_DRAIN_SECONDS)
            if stop.is_set() or leaving != "driver shutting down":
                bye = link_pb.LinkMessage(
                    goodbye=link_pb.Goodbye(reason=leaving, code=link_pb.GOODBYE_CODE_SHUTTING_DOWN)
                )
                with contextlib.suppress(zmq.ZMQError):
                    await sock.send(bye.SerializeToString(), flags=zmq.NOBLOCK)
            self._queue.end_connection(sock)  # the broker requeues what this connection held
            sock.close(linger=0)

    async def _converse(self, sock: zmq.asyncio.Socket, stop: asyncio.Event) -> str | None:
        """Talk until stopped, silenced or told goodbye (None), or until the device changed
        (the reason, told to the broker before reconnecting)."""
        beat = self.config.heartbeat_seconds
        silence = beat * self.config.heartbeat_misses
        last_heard = time.monotonic()
        next_beat = 0.0
        seq = 0
        while not stop.is_set():
            now = time.monotonic()
            if now >= next_beat:
                seq += 1
                hb = link_pb.Heartbeat(seq=seq, active_lease_id=self._queue.running_id)
                await self._send(sock, link_pb.LinkMessage(heartbeat=hb))
                next_beat = now + beat
                self._status.beat(attested=self.attested, heard_seconds_ago=now - last_heard)
            if now - last_heard > silence:
                log.warning("broker silent for %.1fs; reconnecting", silence)
                return None
            if self._queue.idle and (changed := await self.watch.reason_to_reconnect()):
                log.warning("%s; reconnecting to attest again", changed)
                return changed
            if await sock.poll(timeout=int(min(beat, 0.2) * 1000)):
                message = link_pb.LinkMessage()
                message.ParseFromString(await sock.recv())
                last_heard = time.monotonic()
                if not await self._handle(sock, message):
                    return None
        return None

    async def _handle(self, sock: zmq.asyncio.Socket, message: link_pb.LinkMessage) -> bool:
        kind = message.WhichOneof("body")
        if kind == "challenge":
            await self._send(sock, link_pb.LinkMessage(evidence=self._evidence(message.challenge)))
        elif kind == "verdict":
            self._on_verdict(message.verdict)
        elif kind == "lease":
            await self._on_lease(sock, message.lease)
        elif kind == "cancel":
            lease_id = message.cancel.lease_id
            if lease_id and lease_id == self._queue.running_id:
                # Hardware that can stop a run frees itself sooner; the result is dropped anyway.
                self._cancelling = asyncio.create_task(asyncio.to_thread(self.backend.cancel))
            self._queue.cancel(message.cancel.lease_id, sock)
        elif kind == "goodbye":
            reason = message.goodbye.reason
            if message.goodbye.code in _FATAL_GOODBYES:
                raise DeviceNotAccepted(reason)
            log.warning("broker said goodbye: %s", reason)
            return False
        return True

    def _hello(self) -> link_pb.Hello:
        d = self.watch.description
        return link_pb.Hello(
            device_id=d.device_id,
            num_qubits=d.num_qubits,
            basis_gates=list(d.basis_gates),
            coupling_map=[devices_pb2.CouplingEdge(control=a, target=b) for a, b in d.coupling_map],
            backend=d.backend,
            driver_build=self._measurements().driver_build,
            certificate_chain=self.certificate_chain,
            grant_key=self._grant_key.public,
            max_leases=self.config.max_leases,
        )

    def _evidence(self, challenge: link_pb.Challenge) -> link_pb.EvidenceMessage:
        self.counter += 1
        claims = EvidenceClaims(
            device_id=self.watch.description.device_id,
            nonce=challenge.nonce,
            issued_at=time.time(),
            boot_epoch=self.boot_epoch,
            counter=self.counter,
            measurements=self._measurements(),
        )
        envelope = make_evidence(claims, self.key)
        self._pending_digest = envelope.digest()
        return link_pb.EvidenceMessage(envelope=envelope.to_json())

    def _on_verdict(self, verdict: link_pb.AttestationVerdict) -> None:
        self.attested = verdict.affirming
        if verdict.affirming:
            self.evidence_digest = self._pending_digest
            log.info("attested by %s for %.0fs", self.broker, verdict.valid_for_seconds)
        else:
            log.error("attestation refused: %s", "; ".join(verdict.reasons))

    async def _on_lease(self, sock: zmq.asyncio.Socket, sealed: link_pb.LeaseGrant) -> None:
        try:
            grant = open_grant(sealed, self._grant_key, link_key=self._link_key)
        except GrantError as exc:
            log.error("ignoring a lease grant: %s", exc)
            return
        # The device operator's own record of every job this testbed was handed.
        log.info(
            "lease %s received for job %s (%d shots)", grant.lease_id, grant.job_id, grant.shots
        )
        circuit = self._circuit_of(grant)
        if self._queue.add(HeldLease(grant=grant, sock=sock)):
            self._ahead[grant.lease_id] = circuit
        else:
            failure = link_pb.LeaseFailure(
                lease_id=grant.lease_id,
                job_id=grant.job_id,
                error=f"driver already holds its {self.config.max_leases} leases",
            )
            await self._send(sock, link_pb.LinkMessage(failure=failure))

    async def _execute(self, lease: HeldLease) -> None:
        """Run one lease on the device; its answer is signed and sent beside the next one."""
        grant, sock = lease.grant, lease.sock
        circuit = self._ahead.pop(grant.lease_id, None)
        if lease.cancelled:  # dropped before it started: it never runs
            log.info("lease %s dropped before it started: the broker withdrew it", grant.lease_id)
            await self._send(sock, _cancelled(grant))
            return
        if circuit is None:
            circuit = self._circuit_of(grant)
        # The device starts first; the driver says so (and logs it) while it runs.
        start = self._start(circuit, grant) if isinstance(circuit, QuantumCircuit) else None
        log.info("running lease %s for job %s", grant.lease_id, grant.job_id)
        started = link_pb.LeaseStarted(lease_id=grant.lease_id, job_id=grant.job_id)
        await self._send(sock, link_pb.LinkMessage(started=started))
        try:
            if start is None:
                assert isinstance(circuit, Exception)
                raise circuit
            ran = await self._run_grant(grant, *start)
        except Exception as exc:  # report every failure to the broker rather than die
            permanent = isinstance(exc, ValueError)
            fail = link_pb.LeaseFailure(
                lease_id=grant.lease_id, job_id=grant.job_id, error=str(exc), permanent=permanent
            )
            self._answers.post(self._answer(lease, link_pb.LinkMessage(failure=fail)))
            return
        self._answers.post(self._answer(lease, ran))

    def _start(
        self, circuit: QuantumCircuit, grant: link_pb.LeaseGrant
    ) -> tuple[float, asyncio.Future[_Executed]]:
        """Hand the circuit to the device now (no await before it): when, and its run."""
        began = time.monotonic()
        loop = asyncio.get_running_loop()
        run = loop.run_in_executor(None, self._prepare_and_run, circuit, grant.shots, grant.memory)
        return began, run

    def _prepare_and_run(self, circuit: QuantumCircuit, shots: int, memory: bool) -> _Executed:
        """On a worker thread, in one hop (each hop between threads costs the run's latency):
        the circuit prepared under the faithful contract (as sent, or translated at level 0
        only), then run, unless what ran could not be reported or its shot memory would be
        over its bound (ValueError, permanent: no device could)."""
        prepared = self.backend.prepare(circuit)
        executed = executed_circuit_text(prepared)
        if memory:
            try:
                check_size(shots, prepared.circuit.num_clbits)
            except ShotMemoryError as exc:
                raise ValueError(str(exc)) from None
        execution = self.backend.run(prepared, shots, memory=memory, options=RunOptions())
        return _Executed(prepared=prepared, text=executed, execution=execution)

    async def _answer(self, lease: HeldLease, ran: Ran | link_pb.LinkMessage) -> None:
        """Sign and send the lease's result, or what stands in for it (cancelled while it ran:
        the result is withheld)."""
        if lease.cancelled:
            reply = _cancelled(lease.grant)
        elif isinstance(ran, Ran):
            reply = link_pb.LinkMessage(result=self._result(lease.grant, ran))
        else:
            reply = ran
        await self._send(lease.sock, reply)

    def _circuit_of(self, grant: link_pb.LeaseGrant) -> QuantumCircuit | Exception:
        """The grant's circuit, checked against its digest and decoded for the device as it is
        now (on arrival, while the device runs an earlier lease), or why it cannot run (raised
        when its turn comes)."""
        try:
            if hashlib.sha256(grant.circuit_payload).hexdigest() != grant.circuit_digest:
                raise ValueError("circuit payload does not match its digest; refusing to run it")
            return decode_circuit(
                grant.circuit_format,
                grant.circuit_payload,
                device_qubits=self.watch.description.num_qubits,
            )
        except Exception as exc:
            return exc

    async def _run_grant(
        self, grant: link_pb.LeaseGrant, began: float, running: asyncio.Future[_Executed]
    ) -> Ran:
        done = await running
        executed = done.text
        memory: ShotMemory | None = None
        if grant.memory:
            memory = self._memory_of(done, grant.shots)
            counts = memory.histogram()  # the counts are exactly the memory's histogram
        else:
            counts = done.execution.counts
        if self.config.simulated_drift and memory is None:
            # Noise simulation, not cryptography.
            counts = flip_bits(counts, self.config.simulated_drift, random.Random())  # noqa: S311
        pad = self.config.min_execution_seconds - (time.monotonic() - began)
        if pad > 0:
            await asyncio.sleep(pad)
        ended = time.monotonic()
        self.busy.record(began, ended)
        return Ran(counts=counts, seconds=ended - began, executed=executed, memory=memory)

    def _result(self, grant: link_pb.LeaseGrant, ran: Ran) -> link_pb.LeaseResult:
        digest = hashlib.sha256(grant.circuit_payload).hexdigest()  # checked before it ran
        memory = ran.memory
        claims = ReceiptClaims(
            job_id=grant.job_id,
            device_id=self.watch.description.device_id,
            circuit_digest=digest,
            shots=grant.shots,
            result_digest=result_digest(ran.counts),
            dispatch_nonce=grant.dispatch_nonce,
            evidence_digest=self.evidence_digest,
            issued_at=time.time(),
            executed_circuit_digest=executed_circuit_digest(ran.executed, digest),
            memory_digest=memory.digest() if memory is not None else "",
        )
        receipt: Envelope = sign_receipt(claims, self.key)
        return link_pb.LeaseResult(
            lease_id=grant.lease_id,
            job_id=grant.job_id,
            counts=ran.counts,
            execution_seconds=ran.seconds,
            receipt=receipt.to_json(),
            executed_circuit=ran.executed,
            memory=memory.packed if memory is not None else b"",
            memory_width=memory.width if memory is not None else 0,
        )

    def _memory_of(self, done: _Executed, shots: int) -> ShotMemory:
        """Every shot's outcome in shot order (drift, if simulated, flips bits per shot)."""
        execution, prepared = done.execution, done.prepared
        if execution.memory is None or len(execution.memory) != shots:
            raise RuntimeError("the backend did not return one outcome per shot")
        bitstrings = execution.memory
        if self.config.simulated_drift:
            rng = random.Random()  # noqa: S311  (noise simulation, not cryptography)
            bitstrings = [
                next(iter(flip_bits({bits: 1}, self.config.simulated_drift, rng)))
                for bits in bitstrings
            ]
        return ShotMemory.from_bitstrings(bitstrings, prepared.circuit.num_clbits)

    def _measurements(self) -> Measurements:
        """What this device is now, as its evidence states it."""
        return measure(
            self.watch.description,
            self.config.firmware,
            control_software=self.backend.control_software,
            plugin_root=self._plugin_root,
        )

    async def _send(self, sock: zmq.asyncio.Socket, message: link_pb.LinkMessage) -> None:
        await sock.send(message.SerializeToString())


def _cancelled(grant: link_pb.LeaseGrant) -> link_pb.LinkMessage:
    fail = link_pb.LeaseFailure(lease_id=grant.lease_id, job_id=grant.job_id, error="cancelled")
    return link_pb.LinkMessage(failure=fail)
