"""Audit inclusion proofs: the bundle's `audit_inclusion` object (`InclusionProof.from_dict`),
the proof verifier (documented to return its problems, never to raise) and the leaf decoder.

Documented failure of the decoders: `ProofFormatError`. The input is JSON, read as the bundle
reader does (`json.loads`, whose own ValueError is the bundle reader's to map)."""

from __future__ import annotations

import contextlib
import json

from attestation.audit_inclusion import (
    ExpectedCompletion,
    InclusionProof,
    ProofFormatError,
    decode_entry,
    verify_inclusion_proof,
)
from fuzz import world

EXPECTED: tuple[type[BaseException], ...] = (ProofFormatError,)
COMPLETION = ExpectedCompletion(
    job_id="job-fuzz", device_id=world.DEVICE_ID, shots=100, counts={"00": 60, "11": 40}
)


def one_input(data: bytes) -> None:
    with contextlib.suppress(*EXPECTED):
        decode_entry(data)
    try:
        raw = json.loads(data)
    except (ValueError, RecursionError):  # not JSON: nothing for the proof reader
        return
    try:
        proof = InclusionProof.from_dict(raw)
    except EXPECTED:
        return
    problems = verify_inclusion_proof(proof, world.AUDIT_KEY.public_key, COMPLETION)
    assert all(isinstance(p, str) for p in problems)
