"""DSSE envelopes (secure-systems-lab/dsse v1): signatures over PAE(type, payload), never raw JSON.

Binding the payload type into the signed bytes stops a signature made for one kind of statement
(a receipt, say) from being replayed as another (evidence).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from typing import Any

from attestation._json import StrictJSONError, canonical_dumps, strict_loads
from attestation.keys import SigningKey, VerifyKey

# Evidence and receipts are a few hundred bytes; the cap keeps a hostile peer from making us parse
# megabytes of JSON before any signature has been checked.
MAX_ENVELOPE_BYTES = 1 << 20
# Our signers add one signature. Without a cap, one envelope could carry tens of thousands of
# signatures under the device's (public) key id, each costing a verification.
MAX_SIGNATURES = 4


class EnvelopeError(ValueError):
    """The bytes are not a well-formed DSSE envelope; the message says what is wrong."""


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding; LEN is the byte length in ASCII decimal."""
    type_bytes = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(type_bytes), type_bytes, len(payload), payload)


@dataclass(frozen=True, kw_only=True, slots=True)
class Signature:
    """One signature; `keyid` is the signer's `VerifyKey.key_id`."""

    keyid: str
    sig: bytes


@dataclass(frozen=True, kw_only=True, slots=True)
class Envelope:
    """A signed payload with its type; the signatures cover `pae(payload_type, payload)`."""

    payload_type: str
    payload: bytes
    signatures: tuple[Signature, ...]

    def to_json(self) -> bytes:
        """Standard DSSE JSON, with sorted keys so the same envelope always gives the same bytes."""
        return canonical_dumps(
            {
                "payloadType": self.payload_type,
                "payload": base64.b64encode(self.payload).decode("ascii"),
                "signatures": [
                    {"keyid": s.keyid, "sig": base64.b64encode(s.sig).decode("ascii")}
                    for s in self.signatures
                ],
            }
        )

    @classmethod
    def from_json(cls, data: bytes) -> Envelope:
        if len(data) > MAX_ENVELOPE_BYTES:
            raise EnvelopeError(f"envelope is {len(data)} bytes, over {MAX_ENVELOPE_BYTES}")
        try:
            raw = strict_loads(data)
        except StrictJSONError as exc:
            raise EnvelopeError(f"envelope: {exc}") from exc
        if not isinstance(raw, dict):
            raise EnvelopeError("envelope: expected a JSON object")
        payload_type = raw.get("payloadType")
        if not isinstance(payload_type, str) or not payload_type:
            raise EnvelopeError("envelope: 'payloadType' must be a non-empty string")
        try:
            payload_type.encode("utf-8")  # PAE needs it; a lone surrogate would not encode
        except UnicodeEncodeError as exc:
            raise EnvelopeError("envelope: 'payloadType' is not valid Unicode") from exc
        signatures = raw.get("signatures")
        if not isinstance(signatures, list) or not signatures:
            raise EnvelopeError("envelope: 'signatures' must be a non-empty list")
        if len(signatures) > MAX_SIGNATURES:
            raise EnvelopeError(f"envelope: more than {MAX_SIGNATURES} signatures")
        return cls(
            payload_type=payload_type,
            payload=_b64(raw.get("payload"), "payload"),
            signatures=tuple(_signature(s, i) for i, s in enumerate(signatures)),
        )

    def digest(self) -> str:
        """Hex SHA-256 of `to_json()`: names this envelope in results, receipts and logs."""
        return hashlib.sha256(self.to_json()).hexdigest()


def _signature(raw: Any, index: int) -> Signature:
    where = f"signatures[{index}]"
    if not isinstance(raw, dict):
        raise EnvelopeError(f"envelope: {where} must be an object")
    # DSSE makes keyid optional; an absent one simply never matches a key in verify_envelope.
    keyid = raw.get("keyid", "")
    if not isinstance(keyid, str):
        raise EnvelopeError(f"envelope: {where}.keyid must be a string")
    return Signature(keyid=keyid, sig=_b64(raw.get("sig"), f"{where}.sig"))


def _b64(value: Any, field: str) -> bytes:
    """Decode standard or URL-safe base64, as the DSSE spec asks parsers to accept both."""
    if not isinstance(value, str):
        raise EnvelopeError(f"envelope: {field!r} must be a base64 string")
    text = value.replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise EnvelopeError(f"envelope: {field!r} is not valid base64: {exc}") from exc


def sign_envelope(payload_type: str, payload: bytes, key: SigningKey) -> Envelope:
    signature = Signature(keyid=key.public_key.key_id, sig=key.sign(pae(payload_type, payload)))
    return Envelope(payload_type=payload_type, payload=payload, signatures=(signature,))


def verify_envelope(envelope: Envelope, key: VerifyKey) -> bool:
    """True iff a signature carrying this key's id verifies over the PAE of the envelope."""
    message = pae(envelope.payload_type, envelope.payload)
    return any(s.keyid == key.key_id and key.verify(s.sig, message) for s in envelope.signatures)
