"""DSSE evidence as the broker's attestor receives it: the envelope, its claims, and the whole
appraisal (`appraise`, documented never to raise on hostile input).

Documented failures of the decoders: `EnvelopeError` and `EvidenceError` (both ValueError)."""

from __future__ import annotations

import contextlib

from attestation.appraisal import AppraisalPolicy, AttestationResult, ReferenceValues, appraise
from attestation.dsse import Envelope, EnvelopeError
from attestation.evidence import decode_claims
from attestation.nonces import NonceIssuer
from fuzz import world

REFERENCE = ReferenceValues(
    firmware=frozenset({"fw-1"}),
    control_software=frozenset({"ctl-1"}),
    driver_build=frozenset({"drv-1"}),
    calibration_digest=frozenset({"c" * 64}),
    num_qubits=5,
)
EXPECTED: tuple[type[BaseException], ...] = (ValueError,)  # EnvelopeError, EvidenceError


def one_input(data: bytes) -> None:
    try:
        envelope = Envelope.from_json(data)
    except EnvelopeError:
        pass
    else:
        with contextlib.suppress(*EXPECTED):
            decode_claims(envelope.payload)
    with contextlib.suppress(*EXPECTED):
        decode_claims(data)
    result = appraise(
        data,
        expected_device_id=world.DEVICE_ID,
        certificate_chain=world.device_chain_pem(),
        trust_anchor=world.anchor_pem(),
        registered_fingerprints=frozenset(),
        revoked_serials=frozenset(),
        reference=REFERENCE,
        nonces=NonceIssuer(ttl_seconds=30),
        last_counter=None,
        policy=AppraisalPolicy(),
        now=world.NOW,
    )
    assert isinstance(result, AttestationResult)
