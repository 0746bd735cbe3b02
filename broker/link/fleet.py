"""What the broker knows, live, about each connected driver agent.

A device id may have several driver agents (for example a pool of simulators for one model);
each connection attests on its own and is dispatched to only while its own result affirms.
A connection is its authenticated peer (CurveZMQ key and routing id): its challenges, its
attestation and its leases are its own, and a new connection inherits none of them.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass, field

from attestation.appraisal import AttestationResult, AttestationStatus
from attestation.keys import VerifyKey
from attestation.nonces import NonceIssuer
from broker.devices.directory import ConnectionView
from broker.devices.export_class import AttestedClass
from broker.devices.model import DeviceProfile
from broker.jobs.model import Job, JobState
from broker.link.peer import Peer
from broker.settings import MAX_LEASES_PER_DRIVER

# Lease ids a connection remembers having answered, so a repeated result is told apart from
# one for a lease it never held.
_ANSWERED_KEPT = 8
# Lease ids it remembers the broker withdrew, so the driver's "cancelled" answer is expected
# and a start or result is refused as `lease_withdrawn`: a whole pipeline at its largest.
_WITHDRAWN_KEPT = MAX_LEASES_PER_DRIVER


class LinkState(enum.Enum):
    """Where a driver connection is in its attestation handshake."""

    CHALLENGED = "CHALLENGED"  # a nonce was sent; waiting for evidence
    ATTESTED = "ATTESTED"  # latest evidence affirmed and unexpired
    REJECTED = "REJECTED"  # latest evidence failed appraisal; gets no work


@dataclass(kw_only=True, slots=True, eq=False)
class DriverConnection:
    """Mutable, event-loop-only state of one connected driver."""

    peer: Peer
    device_id: str
    profile: DeviceProfile
    last_seen: float
    # Challenges issued to this connection only: an answer is accepted from no other.
    nonces: NonceIssuer
    # The X25519 public key this connection's Hello announced: its lease grants are sealed to
    # it, so they open only where that Hello came from (not for another holder of its link key).
    grant_key: bytes
    certificate_chain: bytes = b""
    device_key: VerifyKey | None = None
    state: LinkState = LinkState.CHALLENGED
    challenge_sent_at: float = 0.0
    attestation: AttestationResult | None = None
    # The export class this connection's own affirmed evidence gives; the gate decides with it
    # when the connection is offered a job.
    export_class: AttestedClass | None = None
    last_counter: tuple[str, int] | None = None
    # Each lease this driver holds, in grant order (the order its device runs them), with the
    # job as leased (kept so a result needs no store read; every write is still a
    # compare-and-set, so a job cancelled or requeued meanwhile is never overwritten).
    leases: dict[str, Job] = field(default_factory=dict)
    # How many leases it may hold at once: what its Hello asked for, within the broker's limit.
    capacity: int = 1
    # The lease id of a canary circuit in flight (the broker's own probe, never stored).
    canary_lease: str | None = None
    heartbeat_seq: int = 0
    history: list[AttestationStatus] = field(default_factory=list)
    answered: list[str] = field(default_factory=list)  # newest last, at most _ANSWERED_KEPT
    # Leases the broker withdrew before their job started (a quarantine, a clearance change):
    # the driver's "cancelled" answer is expected; a start or a result for one is refused.
    withdrawn: list[str] = field(default_factory=list)  # newest last, at most _WITHDRAWN_KEPT

    def answer(self, lease_id: str) -> None:
        """The lease ended with this connection's answer: forget it as held, remember it."""
        self.leases.pop(lease_id, None)
        self.answered = [*self.answered[-(_ANSWERED_KEPT - 1) :], lease_id]

    def withdraw(self, lease_id: str) -> None:
        """The broker took the lease back before its job started: held no more, remembered."""
        self.leases.pop(lease_id, None)
        self.withdrawn = [*self.withdrawn[-(_WITHDRAWN_KEPT - 1) :], lease_id]

    def pending(self) -> list[tuple[str, Job]]:
        """Leases granted whose job has not started (no canary): the ones still withdrawable."""
        return [
            (lease_id, job)
            for lease_id, job in self.leases.items()
            if lease_id != self.canary_lease and job.state is JobState.DISPATCHED
        ]

    def dispatchable_now(self, now: float) -> bool:
        """Attested with an affirming, unexpired result (whatever lease it holds)."""
        return (
            self.state is LinkState.ATTESTED
            and self.attestation is not None
            and self.attestation.affirming(now)
        )

    @property
    def running_canary(self) -> bool:
        return self.canary_lease is not None and self.canary_lease in self.leases

    def job_leases(self) -> list[Job]:
        """The researchers' jobs this connection holds (not the broker's canary)."""
        return [job for lease_id, job in self.leases.items() if lease_id != self.canary_lease]

    def dispatchable(self, now: float) -> bool:
        """Attested now with room in its pipeline: may be given a lease."""
        return len(self.leases) < self.capacity and self.dispatchable_now(now)


class Fleet:
    """Index of live connections by peer (link key and routing id) and by device id."""

    def __init__(self) -> None:
        self._by_peer: dict[Peer, DriverConnection] = {}

    def profile(self, device_id: str, now: float) -> DeviceProfile | None:
        """What an attested connection of the device announced; None when none is attested."""
        return next(
            (c.profile for c in self.for_device(device_id) if c.dispatchable_now(now)), None
        )

    def add(self, conn: DriverConnection) -> DriverConnection | None:
        """Register a connection; returns the one it replaces (same peer saying Hello again)."""
        old = self._by_peer.get(conn.peer)
        self._by_peer[conn.peer] = conn
        return old

    def remove(self, peer: Peer) -> DriverConnection | None:
        return self._by_peer.pop(peer, None)

    def get(self, peer: Peer) -> DriverConnection | None:
        return self._by_peer.get(peer)

    def on_route(self, route: bytes) -> DriverConnection | None:
        """The connection whose messages the broker sends to this routing id, if any."""
        return next((c for c in self._by_peer.values() if c.peer.route == route), None)

    def for_key(self, key: str) -> list[DriverConnection]:
        return [c for c in self._by_peer.values() if c.peer.key == key]

    def for_device(self, device_id: str) -> list[DriverConnection]:
        return [c for c in self._by_peer.values() if c.device_id == device_id]

    def holding(self, lease_id: str) -> DriverConnection | None:
        for conn in self._by_peer.values():
            if lease_id in conn.leases:
                return conn
        return None

    def __iter__(self) -> Iterator[DriverConnection]:
        return iter(list(self._by_peer.values()))

    def attested(self, device_id: str, now: float) -> bool:
        """Some connection of the device holds an affirming, unexpired attestation result."""
        return any(
            c.attestation is not None and c.attestation.affirming(now)
            for c in self.for_device(device_id)
        )

    def attested_classes(self, device_id: str, now: float) -> list[AttestedClass]:
        """The export classes of the device's connections whose attestation affirms now."""
        return [
            c.export_class
            for c in self.for_device(device_id)
            if c.export_class is not None and c.dispatchable_now(now)
        ]

    def connections(self, device_id: str, now: float) -> list[ConnectionView]:
        """The device's connections as the device directory shows them."""
        return [
            ConnectionView(
                profile=c.profile, attestation=c.attestation, takes_work=c.dispatchable_now(now)
            )
            for c in self.for_device(device_id)
        ]

    def lanes(self, device_id: str, per_job: float, now: float) -> tuple[float, int]:
        """(seconds until a busy device has run what its drivers hold, how many drivers it
        has): what the ETA of a queued job waits for before its place in the queue counts.
        A driver with room in its pipeline takes the job at once."""
        conns = self.for_device(device_id)
        running = [
            max(0.0, per_job * len(c.leases) - (now - first.dispatched_at))
            for c in conns
            if len(c.leases) >= c.capacity
            and (first := next(iter(c.leases.values()), None)) is not None
            and first.dispatched_at is not None
        ]
        busy = min(running) if running and len(running) >= len(conns) else 0.0
        return busy, len(conns)

    def runs_session(self, device_id: str, session_id: str) -> bool:
        return any(
            job.session_id == session_id
            for c in self.for_device(device_id)
            for job in c.leases.values()
        )

    def device_ids(self) -> set[str]:
        return {c.device_id for c in self._by_peer.values()}
