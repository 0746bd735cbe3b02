"""Whether a Hello may open a connection: the link key must be authorised for the device the
Hello names, must not say Hello faster than its allowance (a token bucket per key), the Hello
must carry a grant key that lease grants can be sealed to, and the key must not hold more live
connections than allowed. A flood from one key spends only that key's
allowance; another key, and so another device, is never slowed by it."""

from __future__ import annotations

from dataclasses import dataclass

from attestation.sealing import KEY_BYTES, sealable
from broker.clock import Clock
from broker.link import messages as m
from broker.link.door import LinkRefusal
from broker.link.peer import Peer
from broker.settings import TimingSettings


@dataclass(frozen=True, kw_only=True, slots=True)
class Refused:
    """Why a Hello was refused: what is counted, and the Goodbye the driver gets."""

    reason: LinkRefusal
    goodbye: m.Goodbye


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


class HelloAdmission:
    def __init__(self, *, timing: TimingSettings, clock: Clock) -> None:
        self._burst = timing.hello_burst
        self._every = timing.hello_every_seconds
        self._per_key = timing.connections_per_key
        self._clock = clock
        # One bucket per link key that proved itself: bounded by the authorised keys.
        self._buckets: dict[str, _Bucket] = {}

    def admit(self, peer: Peer, hello: m.Hello, others_of_key: int) -> Refused | None:
        """None when `peer` may connect as `hello` says; `others_of_key` is how many other live
        connections its key already holds."""
        if hello.device_id != peer.device_id:
            return Refused(
                reason=LinkRefusal.WRONG_KEY,
                goodbye=m.Goodbye(
                    code=m.GoodbyeCode.WRONG_KEY,
                    reason=f"this link key is authorised for device {peer.device_id!r}, not "
                    f"{hello.device_id[:128]!r}; use the link key the facility issued for it",
                ),
            )
        if not self._spend(peer.key):
            return Refused(
                reason=LinkRefusal.HELLO_RATE,
                goodbye=m.Goodbye(
                    code=m.GoodbyeCode.TOO_MANY_HELLOS,
                    reason=f"too many Hellos from this link key: at most {self._burst} at once, "
                    f"then one every {self._every:g} s; wait before reconnecting",
                ),
            )
        if not sealable(hello.grant_key):  # after the rate check: it costs an X25519 exchange
            return Refused(
                reason=LinkRefusal.HELLO_WITHOUT_GRANT_KEY,
                goodbye=m.Goodbye(
                    code=m.GoodbyeCode.NO_GRANT_KEY,
                    reason=f"the Hello carried no usable grant key (a {KEY_BYTES}-byte X25519 "
                    "public key made for this connection, that lease grants are sealed to); "
                    "upgrade the driver agent",
                ),
            )
        if others_of_key >= self._per_key:
            return Refused(
                reason=LinkRefusal.TOO_MANY_CONNECTIONS,
                goodbye=m.Goodbye(
                    code=m.GoodbyeCode.TOO_MANY_CONNECTIONS,
                    reason=f"this link key already holds {others_of_key} connections (at most "
                    f"{self._per_key}); close one, or wait until the broker drops a silent one",
                ),
            )
        return None

    def _spend(self, key: str) -> bool:
        now = self._clock.now()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(tokens=float(self._burst), at=now)
        refill = (now - bucket.at) / self._every if self._every > 0 else float(self._burst)
        bucket.tokens = min(float(self._burst), bucket.tokens + max(0.0, refill))
        bucket.at = now
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        return True
