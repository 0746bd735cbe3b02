"""Result receipts: a device's signed statement that it ran this circuit and got these counts.

A receipt binds the job, the exact circuit, the shot count, a digest of the counts, the broker's
single-use dispatch nonce and the evidence the device last attested with; when the device
recorded per-shot memory, also `memory_digest` (see `attestation.shot_memory`), and the counts
must then be exactly the memory's histogram. Anyone holding the device's public key can check a
published result offline with `verify_receipt`.

Receipts since faithful execution also carry `executed_circuit_digest`: SHA-256 hex of the circuit
the device actually ran. It equals `circuit_digest` when the circuit ran exactly as sent;
otherwise it is the digest of the executed circuit's text (OpenQASM 3) that the result carries.
The field is optional, so receipts signed before it existed still verify; they say nothing
about a translation.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass

from attestation._json import (
    StrictJSONError,
    canonical_dumps,
    get_hex,
    get_int,
    get_number,
    get_str,
    is_int,
    object_with,
    strict_loads,
)
from attestation.dsse import Envelope, EnvelopeError, sign_envelope, verify_envelope
from attestation.evidence import MAX_NONCE_BYTES, MIN_NONCE_BYTES
from attestation.keys import SigningKey, VerifyKey
from attestation.shot_memory import ShotMemory, memory_problems

RECEIPT_PAYLOAD_TYPE = "application/vnd.qtestbed.receipt.v1+json"

_FIELDS = frozenset(
    {
        "job_id",
        "device_id",
        "circuit_digest",
        "shots",
        "result_digest",
        "dispatch_nonce",
        "evidence_digest",
        "issued_at",
    }
)
# Present only in receipts of results that carry per-shot memory.
_MEMORY_FIELD = "memory_digest"
_OPTIONAL_FIELDS = frozenset({"executed_circuit_digest", _MEMORY_FIELD})


class ReceiptError(ValueError):
    """A receipt could not be decoded; the message names the bad or missing field."""


@dataclass(frozen=True, kw_only=True, slots=True)
class ReceiptClaims:
    """What a device signs when it returns a result."""

    job_id: str
    device_id: str
    circuit_digest: str
    shots: int
    result_digest: str
    dispatch_nonce: bytes
    evidence_digest: str
    issued_at: float
    executed_circuit_digest: str | None = None  # None only in receipts older than the field
    memory_digest: str = ""  # "" when the result has no per-shot memory


def result_digest(counts: Mapping[str, int]) -> str:
    """Hex SHA-256 of the counts as canonical JSON (sorted keys, compact)."""
    for outcome, count in counts.items():
        if not isinstance(outcome, str) or not is_int(count) or count < 0:
            raise ValueError(f"counts: {outcome!r} -> {count!r} is not a string -> count >= 0")
    return hashlib.sha256(canonical_dumps(dict(counts))).hexdigest()


def encode_receipt(claims: ReceiptClaims) -> bytes:
    body: dict[str, object] = {
        "job_id": claims.job_id,
        "device_id": claims.device_id,
        "circuit_digest": claims.circuit_digest,
        "shots": claims.shots,
        "result_digest": claims.result_digest,
        "dispatch_nonce": claims.dispatch_nonce.hex(),
        "evidence_digest": claims.evidence_digest,
        "issued_at": claims.issued_at,
    }
    if claims.executed_circuit_digest is not None:
        body["executed_circuit_digest"] = claims.executed_circuit_digest
    if claims.memory_digest:
        body[_MEMORY_FIELD] = claims.memory_digest
    return canonical_dumps(body)


def sign_receipt(claims: ReceiptClaims, key: SigningKey) -> Envelope:
    return sign_envelope(RECEIPT_PAYLOAD_TYPE, encode_receipt(claims), key)


def decode_receipt(envelope: Envelope) -> ReceiptClaims:
    """The receipt's claims. Does not check the signature: use `verify_receipt` for that."""
    if envelope.payload_type != RECEIPT_PAYLOAD_TYPE:
        raise ReceiptError(
            f"payload type {envelope.payload_type!r}, expected {RECEIPT_PAYLOAD_TYPE!r}"
        )
    try:
        loaded = strict_loads(envelope.payload)
        present = _OPTIONAL_FIELDS & set(loaded) if isinstance(loaded, dict) else frozenset()
        raw = object_with(loaded, _FIELDS | present, "receipt")
        return ReceiptClaims(
            job_id=get_str(raw, "job_id"),
            device_id=get_str(raw, "device_id"),
            circuit_digest=get_str(raw, "circuit_digest"),
            shots=get_int(raw, "shots", minimum=1),
            result_digest=get_str(raw, "result_digest"),
            dispatch_nonce=get_hex(
                raw, "dispatch_nonce", min_bytes=MIN_NONCE_BYTES, max_bytes=MAX_NONCE_BYTES
            ),
            evidence_digest=get_str(raw, "evidence_digest"),
            issued_at=get_number(raw, "issued_at"),
            executed_circuit_digest=get_str(raw, "executed_circuit_digest")
            if "executed_circuit_digest" in raw
            else None,
            memory_digest=get_str(raw, _MEMORY_FIELD) if _MEMORY_FIELD in raw else "",
        )
    except StrictJSONError as exc:
        raise ReceiptError(f"malformed receipt: {exc}") from exc


def verify_receipt(
    envelope_json: bytes,
    key: VerifyKey,
    *,
    job_id: str,
    circuit_digest: str,
    shots: int,
    counts: Mapping[str, int],
    dispatch_nonce: bytes | None,
    executed_circuit: bytes | None = None,
    memory: ShotMemory | None = None,
) -> list[str]:
    """Every problem with a receipt, as sentences; an empty list means it is valid.

    `dispatch_nonce` None means the caller does not know it (a researcher verifying offline);
    that check is then skipped, all others still apply. `executed_circuit` is the executed
    circuit's text the result carries (empty: it ran as sent); None skips that check.
    `memory` is the per-shot memory that came with the counts, None when none did: the receipt
    must bind it (and only then a memory digest), and the counts must be its histogram.
    """
    try:
        envelope = Envelope.from_json(envelope_json)
    except EnvelopeError as exc:
        return [f"receipt is not a DSSE envelope: {exc}"]
    problems = []
    if not verify_envelope(envelope, key):
        problems.append(f"receipt signature does not verify with key {key.key_id}")
    try:
        claims = decode_receipt(envelope)
    except ReceiptError as exc:
        return [*problems, str(exc)]
    problems.extend(_field_problems(claims, job_id, circuit_digest, shots))
    if executed_circuit is not None:
        problems.extend(executed_circuit_problems(claims, executed_circuit))
    try:
        expected_digest = result_digest(counts)
    except ValueError as exc:
        problems.append(f"result counts cannot be digested: {exc}")
    else:
        if claims.result_digest != expected_digest:
            problems.append("receipt result digest does not match the counts")
    problems.extend(_memory_problems(claims, memory, counts, shots))
    if dispatch_nonce is not None and not hmac.compare_digest(
        claims.dispatch_nonce, dispatch_nonce
    ):
        problems.append("receipt dispatch nonce is not the one this job was dispatched with")
    return problems


def _field_problems(
    claims: ReceiptClaims, job_id: str, circuit_digest: str, shots: int
) -> list[str]:
    problems = []
    if claims.job_id != job_id:
        problems.append(f"receipt is for job {claims.job_id!r}, expected {job_id!r}")
    if claims.circuit_digest != circuit_digest:
        problems.append(
            f"receipt circuit digest {claims.circuit_digest!r}, expected {circuit_digest!r}"
        )
    if claims.shots != shots:
        problems.append(f"receipt says {claims.shots} shots, expected {shots}")
    return problems


def executed_circuit_problems(claims: ReceiptClaims, executed_circuit: bytes) -> list[str]:
    """Whether the executed circuit a result carries is the one the receipt names.

    Empty `executed_circuit` claims the circuit ran as sent: the receipt must then name the
    submitted digest (or, if older than the field, nothing). A receipt without the field cannot
    vouch for any translated circuit.
    """
    named = claims.executed_circuit_digest
    if not executed_circuit:
        if named is not None and named != claims.circuit_digest:
            return ["receipt says the device ran a translated circuit, but the result has none"]
        return []
    if named is None:
        return ["result carries an executed circuit, but the receipt does not name one"]
    if hashlib.sha256(executed_circuit).hexdigest() != named:
        return ["executed circuit does not match the digest the receipt names"]
    return []


def _memory_problems(
    claims: ReceiptClaims, memory: ShotMemory | None, counts: Mapping[str, int], shots: int
) -> list[str]:
    if memory is None:
        if claims.memory_digest:
            return ["receipt binds per-shot memory but the result carries none"]
        return []
    if not claims.memory_digest:
        return ["the result carries per-shot memory the receipt does not bind"]
    problems = []
    if not hmac.compare_digest(claims.memory_digest, memory.digest()):
        problems.append("receipt memory digest does not match the per-shot memory")
    return problems + memory_problems(memory, counts, shots)
