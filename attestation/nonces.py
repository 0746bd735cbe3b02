"""Verifier-chosen, single-use challenge nonces with a time to live."""

from __future__ import annotations

import dataclasses
import secrets
import threading
from dataclasses import dataclass

from attestation.evidence import MAX_NONCE_BYTES, MIN_NONCE_BYTES
from attestation.reasons import ReasonCode


@dataclass(frozen=True, kw_only=True, slots=True)
class _Entry:
    device_id: str
    expires_at: float
    used: bool = False


class NonceIssuer:
    """Issues nonces bound to a device and accepts each one once, before it expires.

    Memory is bounded two ways: entries are forgotten one TTL after they expire (until then a
    late or repeated answer is still reported as expired or replayed rather than unknown), and
    at most `max_entries` are kept, the oldest dropped first. Forgetting is always safe: a
    forgotten nonce is refused as unknown, never accepted.
    """

    def __init__(
        self, ttl_seconds: float, nonce_bytes: int = 32, *, max_entries: int = 65_536
    ) -> None:
        if ttl_seconds <= 0:
            raise ValueError("ttl_seconds must be positive")
        if not MIN_NONCE_BYTES <= nonce_bytes <= MAX_NONCE_BYTES:
            raise ValueError(f"nonce_bytes must be {MIN_NONCE_BYTES} to {MAX_NONCE_BYTES} (EAT)")
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._ttl = ttl_seconds
        self._nonce_bytes = nonce_bytes
        self._max_entries = max_entries
        self._lock = threading.Lock()
        # Insertion order is issue order, so the oldest entries are always at the front.
        self._entries: dict[bytes, _Entry] = {}

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def issue(self, device_id: str, now: float) -> bytes:
        nonce = secrets.token_bytes(self._nonce_bytes)
        with self._lock:
            self._prune(now)
            while len(self._entries) >= self._max_entries:
                del self._entries[next(iter(self._entries))]
            self._entries[nonce] = _Entry(device_id=device_id, expires_at=now + self._ttl)
        return nonce

    def consume(self, device_id: str, nonce: bytes, now: float) -> ReasonCode | None:
        """None if the nonce is good for this device (and it is now used up), else why not."""
        with self._lock:
            reason = self._check(device_id, nonce, now)
            if reason is None:
                self._entries[nonce] = dataclasses.replace(self._entries[nonce], used=True)
            self._prune(now)
            return reason

    def check(self, device_id: str, nonce: bytes, now: float) -> ReasonCode | None:
        """What `consume` would say, without using the nonce up.

        For reporting on evidence whose signature failed: a forged envelope must not be able to
        burn the real device's nonce.
        """
        with self._lock:
            return self._check(device_id, nonce, now)

    def _check(self, device_id: str, nonce: bytes, now: float) -> ReasonCode | None:
        entry = self._entries.get(nonce)
        if entry is None:
            return ReasonCode.NONCE_UNKNOWN
        if entry.device_id != device_id:
            return ReasonCode.NONCE_WRONG_DEVICE
        if entry.used:
            return ReasonCode.NONCE_REPLAYED
        if now >= entry.expires_at:
            return ReasonCode.NONCE_EXPIRED
        return None

    def _prune(self, now: float) -> None:
        # Stops at the first entry still worth keeping: with a steady clock the rest are younger.
        while self._entries:
            oldest = next(iter(self._entries))
            if now < self._entries[oldest].expires_at + self._ttl:
                return
            del self._entries[oldest]
