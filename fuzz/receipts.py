"""Result receipts: `decode_receipt` on any envelope, and `verify_receipt` (documented to return
its problems as sentences, never to raise) as the client and the broker run it.

Documented failures of the decoders: `EnvelopeError` and `ReceiptError`."""

from __future__ import annotations

import contextlib

from attestation.dsse import Envelope, EnvelopeError
from attestation.receipts import ReceiptError, decode_receipt, verify_receipt
from fuzz import world

EXPECTED: tuple[type[BaseException], ...] = (EnvelopeError, ReceiptError)
JOB_ID = "job-fuzz"
CIRCUIT_DIGEST = "d" * 64
SHOTS = 100
COUNTS = {"00": 60, "11": 40}
NONCE = bytes(range(16))


def one_input(data: bytes) -> None:
    with contextlib.suppress(*EXPECTED):
        decode_receipt(Envelope.from_json(data))
    problems = verify_receipt(
        data,
        world.DEVICE_KEY.public_key,
        job_id=JOB_ID,
        circuit_digest=CIRCUIT_DIGEST,
        shots=SHOTS,
        counts=COUNTS,
        dispatch_nonce=NONCE,
        executed_circuit=b"",
    )
    assert all(isinstance(p, str) for p in problems)
