"""What travels on the driver link, in domain terms. `broker.link.codec` is the only place that
turns these into protobuf frames and back; everything else in the broker speaks these."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from broker.jobs.model import Circuit


class GoodbyeCode(enum.Enum):
    """Why a Goodbye was sent: the other end acts on the code, never on the words."""

    UNSPECIFIED = "UNSPECIFIED"  # no code given (an older peer)
    UNKNOWN_DEVICE = "UNKNOWN_DEVICE"  # device id not registered; reconnecting will not help
    HELLO_FIRST = "HELLO_FIRST"  # a message came before Hello
    REVOKED = "REVOKED"  # the device's certificate was revoked
    SHUTTING_DOWN = "SHUTTING_DOWN"  # the sender is going away
    WRONG_KEY = "WRONG_KEY"  # the link key is not authorised for that device; fatal
    TOO_MANY_HELLOS = "TOO_MANY_HELLOS"  # the link key said Hello too often; wait
    TOO_MANY_CONNECTIONS = "TOO_MANY_CONNECTIONS"  # the link key holds its most connections
    NO_GRANT_KEY = "NO_GRANT_KEY"  # the Hello had no usable grant key; fatal


# --- driver -> broker -----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class Hello:
    """A driver's first message: which device it serves, what it can run, its identity chain,
    and the X25519 public key made for this connection alone that its lease grants are sealed
    to (`grant_key`; the admission refuses a Hello whose key nothing can be sealed to)."""

    device_id: str
    num_qubits: int
    basis_gates: tuple[str, ...]
    coupling_map: tuple[tuple[int, int], ...]
    backend: str
    driver_build: str
    certificate_chain: bytes
    grant_key: bytes
    resuming_lease_id: str = ""
    max_leases: int = 1  # leases the driver asks to hold at once (the broker caps it)


@dataclass(frozen=True, kw_only=True, slots=True)
class Evidence:
    """Signed attestation evidence (a DSSE envelope, JSON) answering a challenge."""

    envelope: bytes


@dataclass(frozen=True, kw_only=True, slots=True)
class LeaseStarted:
    lease_id: str
    job_id: str


@dataclass(frozen=True, kw_only=True, slots=True)
class LeaseResult:
    """Counts of a leased job with the receipt the device signed over them."""

    lease_id: str
    job_id: str
    counts: Mapping[str, int]
    execution_seconds: float
    receipt: bytes
    # OpenQASM 3 text of the circuit the device ran when it translated the one sent; empty
    # when it ran the circuit as sent (the receipt's executed_circuit_digest says which).
    executed_circuit: bytes = b""
    memory: bytes = b""  # per-shot memory (attestation.shot_memory layout), when asked for
    memory_width: int = 0


@dataclass(frozen=True, kw_only=True, slots=True)
class LeaseFailure:
    """The device could not run a leased job; `permanent` when no device could."""

    lease_id: str
    job_id: str
    error: str
    permanent: bool


@dataclass(frozen=True, kw_only=True, slots=True)
class Heartbeat:
    seq: int
    active_lease_id: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class Goodbye:
    reason: str
    code: GoodbyeCode = GoodbyeCode.UNSPECIFIED


Inbound = Hello | Evidence | LeaseStarted | LeaseResult | LeaseFailure | Heartbeat | Goodbye


# --- broker -> driver -----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class Challenge:
    """Prove what you run: sign evidence that includes this nonce before the deadline."""

    nonce: bytes
    deadline_seconds: float


@dataclass(frozen=True, kw_only=True, slots=True)
class Verdict:
    """The appraisal's outcome, so the operator sees it at the driver too."""

    affirming: bool
    reasons: tuple[str, ...] = ()
    valid_for_seconds: float = 0.0


@dataclass(frozen=True, kw_only=True, slots=True)
class LeaseGrant:
    """Run this job under this lease; the receipt must name `dispatch_nonce`. The codec seals it
    to `grant_key`, the grant key of the connection it is for (from that connection's Hello)."""

    grant_key: bytes
    lease_id: str
    job_id: str
    circuit: Circuit
    shots: int
    dispatch_nonce: bytes
    lease_seconds: float
    memory: bool = False  # record per-shot memory and bind it in the receipt


@dataclass(frozen=True, kw_only=True, slots=True)
class LeaseCancel:
    """Abandon this lease (its job was cancelled)."""

    lease_id: str


Outbound = Challenge | Verdict | LeaseGrant | LeaseCancel | Heartbeat | Goodbye
