"""The broker as RATS Verifier front-end: challenges drivers, appraises their evidence, and keeps
each connection's attestation result current (re-challenging before it expires).

Only a connection whose latest result affirms and has not expired is dispatchable; every
verdict is audited and counted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from attestation.appraisal import AppraisalPolicy, AttestationResult, AttestationStatus, appraise
from attestation.nonces import NonceIssuer
from broker.facility import FacilityRef
from broker.fleet import DeviceProfile, DriverConnection, Fleet, LinkState
from broker.ledger import JobLedger
from broker.link import DriverLink
from broker.settings import TimingSettings
from qtestbed.v1 import driver_link_pb2 as link_pb

log = logging.getLogger(__name__)

# Re-challenge when this fraction of a result's lifetime is left, so it never lapses in use.
_REFRESH_FRACTION = 0.25


class Attestor:
    def __init__(
        self,
        *,
        link: DriverLink,
        fleet: Fleet,
        facility: FacilityRef,
        ledger: JobLedger,
        timing: TimingSettings,
        on_attested: Callable[[str], None],
    ) -> None:
        self.link = link
        self.fleet = fleet
        self.facility = facility
        self.ledger = ledger
        self.metrics = ledger.metrics
        self.timing = timing
        self.on_attested = on_attested
        self.nonces = NonceIssuer(ttl_seconds=timing.nonce_ttl_seconds)
        self.policy = AppraisalPolicy(
            max_evidence_age_seconds=timing.max_evidence_age_seconds,
            max_clock_skew_seconds=timing.max_clock_skew_seconds,
            result_ttl_seconds=timing.attestation_ttl_seconds,
        )

    async def on_hello(self, identity: bytes, hello: link_pb.Hello) -> None:
        now = self.ledger.clock.now()
        device_id = hello.device_id
        if device_id not in self.facility.current.devices:
            self.metrics.attestations.labels(
                "unregistered", "contraindicated", "UNKNOWN_DEVICE"
            ).inc()
            await self.ledger.audit(
                self.ledger.event(
                    "attestation.failed",
                    "broker",
                    device_id,
                    {"reasons": ["UNKNOWN_DEVICE"], "detail": "device is not registered"},
                )
            )
            goodbye = link_pb.Goodbye(
                reason=f"device {device_id!r} is not registered at this facility; "
                "an operator must add it (with its certificate) to the facility file"
            )
            await self.link.send(identity, link_pb.LinkMessage(goodbye=goodbye))
            return
        profile = DeviceProfile(
            num_qubits=hello.num_qubits,
            basis_gates=tuple(hello.basis_gates),
            coupling_map=tuple((e.control, e.target) for e in hello.coupling_map),
            backend=hello.backend,
            driver_build=hello.driver_build,
        )
        conn = DriverConnection(
            identity=identity, device_id=device_id, profile=profile, last_seen=now
        )
        self.fleet.add(conn)
        self.metrics.drivers.labels(device_id).inc()
        log.info("driver for %s connected (%s)", device_id, identity.hex())
        await self.challenge(conn)

    async def challenge(self, conn: DriverConnection) -> None:
        now = self.ledger.clock.now()
        nonce = self.nonces.issue(conn.device_id, now)
        conn.challenge_sent_at = now
        if conn.state is not LinkState.ATTESTED:
            conn.state = LinkState.CHALLENGED
        msg = link_pb.Challenge(nonce=nonce, deadline_seconds=self.timing.nonce_ttl_seconds)
        await self.link.send(conn.identity, link_pb.LinkMessage(challenge=msg))

    async def on_evidence(self, conn: DriverConnection, evidence: link_pb.EvidenceMessage) -> None:
        now = self.ledger.clock.now()
        registered = self.facility.current.devices.get(conn.device_id)
        result = appraise(
            evidence.envelope,
            expected_device_id=conn.device_id,
            key=registered.key if registered else None,
            reference=registered.reference if registered else None,
            nonces=self.nonces,
            last_counter=conn.last_counter,
            policy=self.policy,
            now=now,
        )
        conn.challenge_sent_at = 0.0
        await self._record(conn, result)
        if result.affirming(now):
            conn.state = LinkState.ATTESTED
            conn.attestation = result
            if result.claims is not None:
                conn.last_counter = (result.claims.boot_epoch, result.claims.counter)
            self.on_attested(conn.device_id)
        else:
            self.reject(conn, result)

    def reject(self, conn: DriverConnection, result: AttestationResult) -> None:
        """Keep a connection out of dispatch until it attests successfully again."""
        conn.state = LinkState.REJECTED
        conn.attestation = result

    async def _record(self, conn: DriverConnection, result: AttestationResult) -> None:
        codes = [r.code.value for r in result.reasons]
        outcome = result.status.value.lower()
        self.metrics.attestations.labels(conn.device_id, outcome, codes[0] if codes else "OK").inc()
        conn.history.append(result.status)
        kind = (
            "attestation.passed"
            if result.status is AttestationStatus.AFFIRMING
            else "attestation.failed"
        )
        detail = {
            "reasons": codes,
            "details": [r.detail for r in result.reasons],
            "evidence_digest": result.evidence_digest,
            "expires_at": result.expires_at,
        }
        await self.ledger.audit(self.ledger.event(kind, "broker", conn.device_id, detail))
        if codes:
            log.warning("attestation of %s failed: %s", conn.device_id, ", ".join(codes))
        verdict = link_pb.AttestationVerdict(
            affirming=result.status is AttestationStatus.AFFIRMING,
            reasons=[f"{r.code.value}: {r.detail}" for r in result.reasons],
            valid_for_seconds=max(0.0, result.expires_at - result.issued_at),
        )
        await self.link.send(conn.identity, link_pb.LinkMessage(verdict=verdict))

    async def maintain(self, now: float) -> None:
        """Re-challenge attested connections before their results lapse; retry lost challenges."""
        ttl = self.timing.attestation_ttl_seconds
        for conn in self.fleet:
            if (
                conn.challenge_sent_at
                and now - conn.challenge_sent_at < self.timing.nonce_ttl_seconds
            ):
                continue  # a challenge is outstanding and still answerable
            if conn.state is LinkState.ATTESTED and conn.attestation is not None:
                if conn.attestation.expires_at - now <= ttl * _REFRESH_FRACTION:
                    await self.challenge(conn)
            elif conn.state is LinkState.CHALLENGED:
                await self.challenge(conn)
