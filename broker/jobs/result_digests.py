"""What a job.completed audit entry says about the stored result, so that `audit verify` can
compare the results table with the log.

Entries written before this module existed carry only {device, shots}; the cross-check
(`broker/audit/crosscheck.py`) then falls back to the receipt the device signed.
"""

from __future__ import annotations

import hashlib

from attestation.receipts import result_digest
from broker.jobs.model import JobResult

# Keys of a job.completed entry's detail. `result_digest` is the receipt's digest of the counts
# (attestation.receipts.result_digest); `receipt_digest` SHA-256 of the receipt bytes as stored.
RESULT_DIGEST = "result_digest"
RECEIPT_DIGEST = "receipt_digest"


def receipt_digest(receipt: bytes) -> str:
    return hashlib.sha256(receipt).hexdigest()


def completed_detail(result: JobResult, shots: int) -> dict[str, object]:
    """The detail of the job.completed entry written with `result`."""
    return {
        "device": result.device_id,
        "shots": shots,
        RESULT_DIGEST: result_digest(result.counts),
        RECEIPT_DIGEST: receipt_digest(result.receipt),
    }
