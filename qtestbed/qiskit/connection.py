"""One mutual-TLS connection to the broker, shared by a provider, its backends, jobs and sessions.

`qtestbed.client.Client` covers devices, jobs and results; batches (SubmitJobs, retried under
the same idempotency keys) and the session RPCs go through a stub on the client's channel, with
refusals raised as `QtestbedError` like every other call.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TypeVar

from qtestbed.client import Client, Profile, QtestbedError
from qtestbed.v1 import jobs_pb2, jobs_pb2_grpc

ProfileSource = Path | str | Profile | Client
"""A client profile TOML (path), a loaded `Profile`, or a `Client` the caller keeps owning."""

# Worth another try with the same idempotency key: the broker returns the job an earlier
# attempt created instead of queueing the circuit twice.
_TRANSIENT = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED"})
_SUBMIT_ATTEMPTS = 3

M = TypeVar("M")


def expect(value: object, kind: type[M]) -> M:
    """`value` as a `kind` (a protobuf message class), or TypeError: `Client.call` is untyped."""
    if not isinstance(value, kind):
        raise TypeError(f"broker answered {type(value).__name__}, expected {kind.__name__}")
    return value


class Connection:
    """A `Client` and a JobService stub on its channel; closes the client only if it opened it."""

    def __init__(self, client: Client, *, owned: bool = False) -> None:
        self.client = client
        self._owned = owned
        self._jobs = jobs_pb2_grpc.JobServiceStub(client.channel)

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
        batch = jobs_pb2.SubmitJobsRequest(jobs=requests)
        for attempt in range(_SUBMIT_ATTEMPTS):
            try:
                answer = self.client.call(self._jobs.SubmitJobs, batch)
            except QtestbedError as exc:
                if exc.code not in _TRANSIENT or attempt == _SUBMIT_ATTEMPTS - 1:
                    raise
                time.sleep(0.2 * 2**attempt)
                continue
            return [r.job for r in expect(answer, jobs_pb2.SubmitJobsResponse).jobs]
        raise AssertionError("unreachable")

    def open_session(self, device_id: str, *, project: str, max_seconds: float) -> jobs_pb2.Session:
        request = jobs_pb2.OpenSessionRequest(
            device_id=device_id, project=project, max_seconds=max_seconds
        )
        return expect(self.client.call(self._jobs.OpenSession, request), jobs_pb2.Session)

    def get_session(self, session_id: str) -> jobs_pb2.Session:
        request = jobs_pb2.GetSessionRequest(session_id=session_id)
        return expect(self.client.call(self._jobs.GetSession, request), jobs_pb2.Session)

    def close_session(self, session_id: str, reason: str = "") -> jobs_pb2.Session:
        request = jobs_pb2.CloseSessionRequest(session_id=session_id, reason=reason)
        return expect(self.client.call(self._jobs.CloseSession, request), jobs_pb2.Session)
