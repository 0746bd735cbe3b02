"""One mutual-TLS connection to the broker, shared by a provider, its backends, jobs and sessions.

Every call goes through `qtestbed.client.Client`; this adds retries of a batch submission on
transient failures and on limits the broker says will lift (RetryInfo), under the same
idempotency keys so that nothing is queued twice.

A connection is opened lazily and holds only what is needed to open it again (the profile: the
broker's address and the paths of the CA certificate, the caller's certificate and key), so
everything that holds one survives `copy.deepcopy` and `pickle`: a copy opens its own channel,
from the same files, the first time it is used. `copy.copy` shares the connection itself.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from qtestbed.client import Client, Profile, QtestbedError
from qtestbed.v1 import jobs_pb2

ProfileSource = Path | str | Profile | Client
"""A client profile TOML (path), a loaded `Profile`, or a `Client` the caller keeps owning."""

# Worth another try with the same idempotency key: the broker returns the job an earlier
# attempt created instead of queueing the circuit twice.
_TRANSIENT = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED"})
_SUBMIT_ATTEMPTS = 6
# A refusal the broker gives a retry delay for (a rate limit, load shedding, a store outage) is
# waited out for at most this long in all; a longer one (a quota until next month) is raised.
MAX_RETRY_WAIT_SECONDS = 60.0


def retry_wait(error: QtestbedError, attempt: int, waited: float) -> float | None:
    """Seconds to wait before attempt `attempt + 1` of a batch, having waited `waited` so far;
    None: raise `error`. The broker's own delay when it gave one (never shorter than the
    backoff), else the backoff for a transient failure; RESOURCE_EXHAUSTED only with a delay."""
    given = error.retry_after_seconds or 0.0
    if error.code not in _TRANSIENT and not (error.code == "RESOURCE_EXHAUSTED" and given):
        return None
    wait: float = max(0.2 * 2.0**attempt, given)
    if attempt >= _SUBMIT_ATTEMPTS - 1 or waited + wait > MAX_RETRY_WAIT_SECONDS:
        return None
    return wait


class Connection:
    """A `Client` shared by a provider's objects; closes it only if it opened it."""

    def __init__(
        self, client: Client | None = None, *, owned: bool = False, profile: Profile | None = None
    ) -> None:
        if client is not None:
            profile = client.profile
        elif profile is None:
            raise ValueError("a connection needs a client or a profile to open one from")
        self.profile: Profile = profile
        self._client = client
        self._owned = owned
        self._lock = threading.Lock()

    @classmethod
    def open(cls, source: ProfileSource) -> Connection:
        if isinstance(source, Client):
            return cls(source)
        profile = source if isinstance(source, Profile) else Profile.load(Path(source))
        return cls(Client(profile), owned=True)

    @property
    def client(self) -> Client:
        """The open client, opened now from the profile if this is a copy not yet used."""
        with self._lock:
            if self._client is None:
                self._client = Client(self.profile)
                self._owned = True
            return self._client

    def close(self) -> None:
        with self._lock:
            if self._owned and self._client is not None:
                self._client.close()
                self._client = None

    # Copies reconnect from the profile; a channel is never copied or pickled.
    def __getstate__(self) -> dict[str, Any]:
        return {"profile": self.profile}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.profile = state["profile"]
        self._client, self._owned, self._lock = None, False, threading.Lock()

    def __copy__(self) -> Connection:
        return self  # a shallow copy of its holder shares the connection

    def __deepcopy__(self, memo: dict[int, Any]) -> Connection:
        return Connection(profile=self.profile)

    def submit_batch(self, requests: list[jobs_pb2.SubmitJobRequest]) -> list[jobs_pb2.Job]:
        """SubmitJobs (all or none), retried on transient failures under the same keys."""
        if not all(r.idempotency_key for r in requests):
            raise ValueError("every submission needs an idempotency key so that retries are safe")
        waited = 0.0
        for attempt in range(_SUBMIT_ATTEMPTS):
            try:
                answers = self.client.submit_many(requests)
            except QtestbedError as exc:
                wait = retry_wait(exc, attempt, waited)
                if wait is None:
                    raise
                time.sleep(wait)
                waited += wait
                continue
            return [answer.job for answer in answers]
        raise AssertionError("unreachable")
