"""`QtestbedJob`: the broker jobs one `backend.run` call submitted, as one Qiskit job.

Each circuit of a run is its own broker job (one for a single circuit, so `job_id()` is the
broker's id; comma-separated ids for a batch). Waiting uses the broker's WatchJob stream, which
pushes every state and queue change, never a polling loop. Results are handed out only after
their receipts verify (`verify=False` exists for offline inspection of a result that does not).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from qiskit.providers import JobError, JobStatus, JobTimeoutError, JobV1
from qiskit.result import Result

from attestation.shot_memory import ShotMemoryError
from qtestbed.client import QtestbedError, memory_of
from qtestbed.qiskit.connection import Connection
from qtestbed.qiskit.encoding import EncodedCircuit
from qtestbed.qiskit.layout import ClassicalLayout, CountsFormatError
from qtestbed.qiskit.receipts import (
    Attestation,
    Expected,
    ReceiptVerificationError,
    attestation_of,
    problems_with,
)
from qtestbed.qiskit.results import to_qiskit_result
from qtestbed.qiskit.status import TERMINAL, batch_status, state_name
from qtestbed.receipt_bundle import ResultBundle
from qtestbed.v1 import jobs_pb2

if TYPE_CHECKING:
    from qtestbed.qiskit.backend import QtestbedBackend

_REWATCH_PAUSE = 0.5  # seconds, when a watch stream ends before its job is terminal


class JobFailedError(JobError):  # type: ignore[misc]
    """Some jobs of the batch did not complete: each with its state, reason and rule."""

    def __init__(self, failed: Sequence[jobs_pb2.Job]) -> None:
        self.jobs = tuple(failed)
        lines = [
            f"job {job.job_id} {state_name(job)}"
            + (f": {job.reason}" if job.reason else "")
            + (f" [rule {job.rule_id}]" if job.rule_id else "")
            for job in failed
        ]
        super().__init__("; ".join(lines))


@dataclass(frozen=True, kw_only=True, slots=True)
class Submitted:
    """One circuit as submitted: the broker's acknowledgement and what the receipt must match."""

    job: jobs_pb2.Job
    circuit: EncodedCircuit
    layout: ClassicalLayout
    shots: int
    memory: bool = False

    def expected(self) -> Expected:
        return Expected(
            job_id=self.job.job_id,
            device_id=self.job.device_id,
            circuit_digest=self.circuit.digest,
            shots=self.shots,
            memory=self.memory,
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class Outcome:
    """One completed circuit: its final job record, the result as fetched, its counts keyed by
    integer outcome (bit i is clbit i), each shot's outcome in shot order when memory was asked
    for (None otherwise), and the attestation it ran under."""

    submitted: Submitted
    job: jobs_pb2.Job
    result: jobs_pb2.JobResult
    counts: dict[int, int]
    attestation: Attestation
    memory: list[int] | None = None

    def bundle(self) -> ResultBundle:
        """What to keep for `qtestbed receipt verify` (bound to what this client submitted)."""
        expected = self.submitted.expected()
        return ResultBundle(
            job_id=expected.job_id,
            device_id=self.result.device_id,
            circuit_digest=expected.circuit_digest,
            shots=expected.shots,
            counts=dict(self.result.counts),
            receipt=self.result.receipt,
            device_certificate_chain=self.result.device_certificate,
            evidence=self.result.evidence,
            memory=memory_of(self.result),
        )


class QtestbedJob(JobV1):  # type: ignore[misc]
    def __init__(
        self, backend: QtestbedBackend, connection: Connection, submitted: Sequence[Submitted]
    ) -> None:
        if not submitted:
            raise ValueError("a job needs at least one submitted circuit")
        super().__init__(backend, ",".join(s.job.job_id for s in submitted))
        self._connection = connection
        self._submitted = tuple(submitted)
        self._verified: dict[int, tuple[jobs_pb2.Job, jobs_pb2.JobResult]] = {}

    @property
    def broker_job_ids(self) -> list[str]:
        """The broker's id of each circuit's job, in submission order."""
        return [s.job.job_id for s in self._submitted]

    @property
    def submitted(self) -> tuple[Submitted, ...]:
        return self._submitted

    def submit(self) -> None:
        raise JobError("backend.run submits its circuits; this job is already submitted")

    def broker_jobs(self) -> list[jobs_pb2.Job]:
        """The broker's current record of each circuit's job."""
        return [self._connection.client.get_job(job_id) for job_id in self.broker_job_ids]

    def status(self) -> JobStatus:
        return batch_status(self.broker_jobs())

    def queue_position(self) -> int | None:
        """1-based place in the device's queue of the first of these jobs still waiting (the
        broker's exact position), or None when none is queued."""
        places = [j.queue_position for j in self.broker_jobs() if j.state == _QUEUED]
        return min(places) if places else None

    def eta(self) -> dt.datetime | None:
        """When the first of these jobs still waiting is expected to start (the broker's
        estimate), or None when none is queued or the broker gives no estimate."""
        etas = [
            j.eta.ToDatetime(tzinfo=dt.UTC)
            for j in self.broker_jobs()
            if j.state == _QUEUED and j.HasField("eta")
        ]
        return min(etas) if etas else None

    def cancel(self) -> bool:
        """Cancel every job of the batch that has not finished; True if all are cancelled."""
        all_cancelled = True
        for job in self.broker_jobs():
            if job.state == jobs_pb2.JOB_STATE_CANCELLED:
                continue
            if job.state in TERMINAL:
                all_cancelled = False
                continue
            try:
                after = self._connection.client.cancel(
                    job.job_id, reason="cancelled through the Qiskit provider"
                )
            except QtestbedError as exc:
                if exc.code != "FAILED_PRECONDITION":  # it finished meanwhile
                    raise
                all_cancelled = False
                continue
            all_cancelled &= after.state == jobs_pb2.JOB_STATE_CANCELLED
        return all_cancelled

    def wait_for_final_state(
        self,
        timeout: float | None = None,
        wait: float = 5,
        callback: Callable[[str, JobStatus, QtestbedJob], None] | None = None,
    ) -> None:
        """Wait (on the broker's pushed updates; `wait` is unused) until every job is final or
        one has failed; JobTimeoutError after `timeout` seconds."""
        deadline = _deadline(timeout)
        finals = []
        for job_id in self.broker_job_ids:
            final = self._wait(job_id, deadline)
            finals.append(final)
            if callback is not None:
                callback(self.job_id(), batch_status(finals), self)
            if final.state != jobs_pb2.JOB_STATE_COMPLETED:
                return

    def result(self, timeout: float | None = None, *, verify: bool = True) -> Result:
        """Wait for every job, verify every receipt, and return the counts as a Qiskit Result.

        Raises JobFailedError if a job failed, was denied or cancelled, JobTimeoutError after
        `timeout` seconds, and ReceiptVerificationError (naming every problem) if a receipt does
        not hold. `verify=False` is for offline inspection only: it hands out unverified counts.
        """
        backend = self.backend()
        return to_qiskit_result(
            self.outcomes(timeout, verify=verify),
            backend_name=backend.name,
            backend_version=backend.backend_version,
            job_id=self.job_id(),
        )

    def outcomes(self, timeout: float | None = None, *, verify: bool = True) -> list[Outcome]:
        """Each circuit's verified outcome, in submission order (see `result`)."""
        deadline = _deadline(timeout)
        fetched = [self._fetch(i, deadline) for i in range(len(self._submitted))]
        failed = [job for job, result in fetched if result is None]
        if failed:
            raise JobFailedError(failed)
        outcomes = []
        for index, (job, result) in enumerate(fetched):
            assert result is not None
            submitted = self._submitted[index]
            if verify:
                problems = problems_with(self._connection.client, result, job, submitted.expected())
                if problems:
                    raise ReceiptVerificationError(job.job_id, problems)
                self._verified[index] = (job, result)  # only what verified is kept
            try:
                counts = submitted.layout.outcomes(result.counts)
                memory = memory_of(result)
                shots = memory.values() if memory is not None else None
            except (CountsFormatError, ShotMemoryError) as exc:
                raise JobError(f"job {job.job_id}: {exc}") from None
            if memory is not None and memory.width != submitted.layout.num_clbits:
                raise JobError(
                    f"job {job.job_id}: per-shot memory has {memory.width} bits a shot, the "
                    f"circuit {submitted.layout.num_clbits}"
                )
            outcomes.append(
                Outcome(
                    submitted=submitted,
                    job=job,
                    result=result,
                    counts=counts,
                    attestation=attestation_of(result, job, verified=verify),
                    memory=shots,
                )
            )
        return outcomes

    def attestation(self, experiment: int = 0, *, timeout: float | None = None) -> Attestation:
        """The evidence digest and calibration digest circuit `experiment` ran under, read from
        the evidence its verified receipt names (waits for the result)."""
        return self.outcomes(timeout)[experiment].attestation

    def bundle(self, experiment: int = 0, *, timeout: float | None = None) -> ResultBundle:
        """A verified result bundle for circuit `experiment`, to keep or check offline."""
        return self.outcomes(timeout)[experiment].bundle()

    def _fetch(
        self, index: int, deadline: float | None
    ) -> tuple[jobs_pb2.Job, jobs_pb2.JobResult | None]:
        if index in self._verified:
            return self._verified[index]
        job = self._wait(self._submitted[index].job.job_id, deadline)
        if job.state != jobs_pb2.JOB_STATE_COMPLETED:
            return job, None
        return job, self._connection.client.result(job.job_id)

    def _wait(self, job_id: str, deadline: float | None) -> jobs_pb2.Job:
        """The job once terminal, from the WatchJob stream."""
        client = self._connection.client
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise JobTimeoutError(f"timed out waiting for job {job_id}")
            try:
                for job in client.watch(job_id, timeout=remaining):
                    if job.state in TERMINAL:
                        return job
            except QtestbedError as exc:
                if exc.code == "DEADLINE_EXCEEDED":
                    raise JobTimeoutError(f"timed out waiting for job {job_id}") from None
                raise
            # The stream ended early (e.g. the broker restarted): look, then watch again.
            job = client.get_job(job_id)
            if job.state in TERMINAL:
                return job
            time.sleep(_REWATCH_PAUSE)


_QUEUED = jobs_pb2.JOB_STATE_QUEUED


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout
