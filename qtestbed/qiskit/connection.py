"""One mutual-TLS connection to the broker, shared by a provider, its backends, jobs and sessions.

Every call goes through `qtestbed.client.Client`; this adds retries of a batch submission on
transient failures, under the same idempotency keys so that nothing is queued twice.
"""

from __future__ import annotations

import time
from pathlib import Path

from qtestbed.client import Client, Profile, QtestbedError
from qtestbed.v1 import jobs_pb2

ProfileSource = Path | str | Profile | Client
"""A client profile TOML (path), a loaded `Profile`, or a `Client` the caller keeps owning."""

# Worth another try with the same idempotency key: the broker returns the job an earlier
# attempt created instead of queueing the circuit twice.
_TRANSIENT = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED"})
_SUBMIT_ATTEMPTS = 3


class Connection:
    """A `Client` shared by a provider's objects; closes it only if it opened it."""

    def __init__(self, client: Client, *, owned: bool = False) -> None:
        self.client = client
        self._owned = owned

    @classmethod
    def open(cls, source: ProfileSource) -> Connection:
        if isinstance(source, Client):
            return cls(source)
        profile = source if isinstance(source, Profile) else Profile.load(Path(source))
        return cls(Client(profile), owned=True)

    def close(self) -> None:
        if self._owned:
            self.client.close()

    def submit_batch(self, requests: list[jobs_pb2.SubmitJobRequest]) -> list[jobs_pb2.Job]:
        """SubmitJobs (all or none), retried on transient failures under the same keys."""
        if not all(r.idempotency_key for r in requests):
            raise ValueError("every submission needs an idempotency key so that retries are safe")
        for attempt in range(_SUBMIT_ATTEMPTS):
            try:
                answers = self.client.submit_many(requests)
            except QtestbedError as exc:
                if exc.code not in _TRANSIENT or attempt == _SUBMIT_ATTEMPTS - 1:
                    raise
                time.sleep(0.2 * 2**attempt)
                continue
            return [answer.job for answer in answers]
        raise AssertionError("unreachable")
