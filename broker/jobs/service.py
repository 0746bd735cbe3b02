"""The job service in domain terms for everything but submission: read, list, watch, cancel,
fetch a result, see one's quota. Dataclasses in, dataclasses out, BrokerError on refusal; a job
the caller may not see is NOT_FOUND, never PERMISSION_DENIED."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from attestation.dsse import Envelope
from attestation.receipts import decode_receipt
from broker.access.open_streams import StreamEnding, add_stream_check
from broker.access.quota import Quotas, QuotaStatus
from broker.audit.log import AuditLog
from broker.clock import Clock
from broker.devices.registry import DeviceRegistry
from broker.errors import BrokerError, ErrorCode, not_found
from broker.jobs.guard import CallerGuard, project_of
from broker.jobs.ledger import JobLedger
from broker.jobs.model import Job, JobResult, JobState
from broker.jobs.ports import LeaseCanceller
from broker.jobs.views import JobView, JobViews
from broker.jobs.watch import JobWatchers
from broker.store.runner import StoreRunner


@dataclass(frozen=True, kw_only=True, slots=True)
class ResultView:
    result: JobResult
    device_certificate: bytes
    evidence: bytes


class JobService:
    def __init__(
        self,
        *,
        clock: Clock,
        runner: StoreRunner,
        audit: AuditLog,
        guard: CallerGuard,
        ledger: JobLedger,
        views: JobViews,
        watchers: JobWatchers,
        registry: DeviceRegistry,
        quotas: Quotas,
        leases: LeaseCanceller,
    ) -> None:
        self._clock = clock
        self._runner = runner
        self._audit = audit
        self._guard = guard
        self._ledger = ledger
        self._views = views
        self._watchers = watchers
        self._registry = registry
        self._quotas = quotas
        self._leases = leases

    async def _owned(self, caller: str, job_id: str) -> Job:
        """The job if the caller may see it; NOT_FOUND otherwise, never PERMISSION_DENIED.
        A researcher's read asks the store for their own job only, so someone else's job and
        no job are one answer from one read: nothing differs in work, time or error."""
        owner = None if self._guard.is_operator(caller) else caller
        job = await self._ledger.get(job_id, owner=owner)
        if job is None:
            raise not_found("job", job_id)
        return job

    async def get(self, caller: str, job_id: str) -> JobView:
        return await self._views.view(await self._owned(caller, job_id))

    async def cancel(self, caller: str, job_id: str, reason: str) -> JobView:
        for _ in range(5):  # retry the compare-and-set if the dispatcher moved the job meanwhile
            job = await self._owned(caller, job_id)
            if job.state.terminal:
                raise BrokerError(
                    ErrorCode.FAILED_PRECONDITION,
                    f"job {job_id} is already {job.state.value} and cannot be cancelled",
                )
            why = reason or f"cancelled by {caller}"
            cancelled = job.transition(JobState.CANCELLED, now=self._clock.now(), reason=why)
            event = self._audit.event("job.cancelled", caller, job_id, {"from": job.state.value})
            if await self._ledger.save(cancelled, expected_version=job.version, event=event):
                if job.lease is not None:
                    await self._leases.cancel_lease(job.lease.lease_id)
                return await self._views.view(cancelled)
        raise BrokerError(ErrorCode.UNAVAILABLE, f"job {job_id} kept changing; try cancel again")

    async def list_jobs(
        self,
        caller: str,
        *,
        device_id: str | None,
        states: Sequence[JobState],
        limit: int,
        before_seq: int | None,
    ) -> list[tuple[int, JobView]]:
        owner = None if self._guard.is_operator(caller) else caller
        rows = await self._runner.call(
            self._runner.store.list_jobs,
            owner=owner,
            device_id=device_id,
            states=states,
            limit=limit,
            before_seq=before_seq,
        )
        return [(seq, await self._views.view(job)) for seq, job in rows]

    async def result(self, caller: str, job_id: str) -> ResultView:
        job = await self._owned(caller, job_id)
        if job.state is not JobState.COMPLETED:
            raise BrokerError(
                ErrorCode.FAILED_PRECONDITION,
                f"job {job_id} is {job.state.value}; a result exists only once it is COMPLETED",
            )
        result = await self._runner.call(self._runner.store.get_result, job_id)
        if result is None:
            raise BrokerError(ErrorCode.UNAVAILABLE, f"result of job {job_id} is not readable now")
        device = self._registry.get(result.device_id)
        cert = device.certificate_chain_pem if device is not None else b""
        return ResultView(
            result=result, device_certificate=cert, evidence=await self._evidence(result)
        )

    async def _evidence(self, result: JobResult) -> bytes:
        """The evidence the receipt names, from the device's attestation history."""
        try:
            claims = decode_receipt(Envelope.from_json(result.receipt))
        except ValueError:
            return b""
        history = await self._registry.history(result.device_id, 1000)
        return next(
            (r.evidence for r in history if r.evidence_digest == claims.evidence_digest), b""
        )

    async def quota(self, caller: str, project: str) -> list[QuotaStatus]:
        """The caller's own and their project's quotas with current usage."""
        principal = self._guard.principal(caller)
        chosen = project_of(principal, project)
        if chosen not in principal.projects:
            raise not_found("project", chosen)
        return await self._quotas.status(principal, chosen, self._clock.now())

    def _no_longer_operator(self, caller: str, job_id: str) -> StreamEnding | None:
        """NOT_FOUND, as a new call would answer, once the caller is no operator."""
        if self._guard.still_operator(caller):
            return None
        return StreamEnding("not_found", not_found("job", job_id))

    async def watch(self, caller: str, job_id: str) -> AsyncIterator[JobView]:
        """The current view, then each change (state or queue position) until terminal.

        One store read when the stream opens; after that each view is built from the newest
        version the ledger published and the scheduler's order (in memory for the front of the
        queue, counted by the store's index beyond it; see `watch`)."""
        job = await self._owned(caller, job_id)
        if job.owner != caller:  # an operator's watch lasts only while they are one
            add_stream_check(lambda: self._no_longer_operator(caller, job_id))
        with self._watchers.subscribe(job_id, job.device_id, caller) as sub:
            view = await self.get(caller, job_id)
            sub.sent(view.queue_position, version=view.job.version)
            yield view
            current = view.job
            while not current.state.terminal:
                newer = await sub.next()
                if newer is not None and newer.version > current.version:
                    current = newer
                fresh = await self._views.view(current)
                if (fresh.job.version, fresh.queue_position) != (
                    view.job.version,
                    view.queue_position,
                ):
                    sub.sent(fresh.queue_position, version=fresh.job.version)
                    view = fresh
                    yield view
