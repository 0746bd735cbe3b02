"""Admission of submissions, before any parsing or storing: refused early and cheaply when the
store is overloaded (load shedding), when the caller's own token bucket is empty, or when the
facility's is. Every refusal is RESOURCE_EXHAUSTED with the delay after which a retry can succeed,
counted by reason at once and audited in aggregate (a flood cannot flood the audit log).

A device may also bound its queue (`max_queued_per_device`). Past the bound, a project may
still queue there up to its share of the bound (by the same weights as fair-share dispatch,
among the projects with jobs queued there), so one project filling a device cannot lock the
others out of it; jobs for other devices are not limited at all. That check runs once the
device named is known to be visible to the caller (`device_room`, from submission), so a
hidden device's queue answers exactly as an absent device does.

A call costs the jobs it would queue (1 for SubmitJob, the batch size for SubmitJobs): the store
writes one row per job, so a batch is charged what it costs the store. A call refused here takes
no tokens; a call admitted here and refused later (bad circuit, clearance) keeps its cost, so a
flood of invalid submissions is limited like any other.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Mapping, Sequence

from broker.audit.log import AuditLog
from broker.audit.refusals import RefusalLog
from broker.clock import Clock
from broker.errors import BrokerError, resource_exhausted
from broker.jobs.token_bucket import BucketShape, BucketTable, TableFull, TokenBucket
from broker.metrics import BrokerMetrics
from broker.settings import AdmissionSettings

log = logging.getLogger(__name__)

PRINCIPAL_RATE = "principal_rate"
FACILITY_RATE = "facility_rate"
OVERLOAD = "overload"
DEVICE_BACKLOG = "device_backlog"

# A place held on a device's queue for a job being submitted: (device id, project).
Held = tuple[str, str]


class SubmissionAdmission:
    def __init__(
        self,
        *,
        settings: AdmissionSettings,
        clock: Clock,
        metrics: BrokerMetrics,
        audit: AuditLog,
        store_depth: Callable[[], int],
        lane_depths: Callable[[str], Mapping[str, int]],
        weight_of: Callable[[str], int],
    ) -> None:
        self._s = settings
        self._clock = clock
        self._metrics = metrics
        self._store_depth = store_depth
        self._lane_depths = lane_depths
        self._weight_of = weight_of
        # Jobs past the bound check whose calls have not stored them yet, so concurrent calls
        # decide on what is queued plus what is on its way, not on the store alone.
        self._held: collections.Counter[Held] = collections.Counter()
        now = clock.now()
        self._principals = BucketTable(
            BucketShape(settings.principal_jobs_per_second, settings.principal_burst),
            settings.max_tracked_principals,
        )
        self._facility = TokenBucket(
            BucketShape(settings.facility_jobs_per_second, settings.facility_burst), now
        )
        self._log = RefusalLog(
            kind="admission.refused",
            what="submissions at admission",
            audit=audit,
            clock=clock,
            logger=log,
            window_seconds=settings.refusal_audit_seconds,
        )

    def admit(self, caller: str, cost: int) -> None:
        """Take `cost` tokens for `caller`, or raise RESOURCE_EXHAUSTED (taking nothing)."""
        s = self._s
        now = self._clock.now()
        depth = self._store_depth()
        if depth >= s.max_store_queue:
            raise self._refuse(
                OVERLOAD,
                caller,
                f"the broker is overloaded ({depth} store calls waiting, at most "
                f"{s.max_store_queue}); nothing was queued",
                s.overload_retry_seconds,
            )
        try:
            mine = self._principals.bucket(caller, now)
        except TableFull as exc:
            raise self._refuse(
                OVERLOAD,
                caller,
                f"the broker is tracking its most principals ({s.max_tracked_principals}) "
                "and all are submitting; nothing was queued",
                exc.retry_after,
            ) from exc
        wait = mine.wait(cost, now)
        if wait > 0:
            raise self._refuse(
                PRINCIPAL_RATE,
                caller,
                f"submission rate limit for principal {caller!r}: {s.principal_burst} jobs at "
                f"once, then {s.principal_jobs_per_second:g} per second; this call queues "
                f"{cost} and nothing was queued",
                wait,
            )
        wait = self._facility.wait(cost, now)
        if wait > 0:
            raise self._refuse(
                FACILITY_RATE,
                caller,
                f"facility-wide submission rate limit: {s.facility_burst} jobs at once, then "
                f"{s.facility_jobs_per_second:g} per second across all principals; nothing "
                "was queued",
                wait,
            )
        mine.take(cost, now)
        self._facility.take(cost, now)

    def device_room(self, caller: str, device_id: str, project: str) -> Held | None:
        """Hold a place for one job of `project` on the device, or raise RESOURCE_EXHAUSTED when
        the device's queue (with the jobs held for calls not yet stored) is at
        `max_queued_per_device` and the project already has its share of that bound there.
        Called only for a device the caller may see and a project the caller belongs to; the
        caller gives the place back (`release`) once the call has stored its jobs or failed.
        None when there is no bound: nothing is held."""
        held = (device_id, project)
        if not self._s.max_queued_per_device:
            return None
        backlog = self._backlog(device_id, project)
        if backlog is not None:
            queued, mine = backlog
            raise self._refuse(
                DEVICE_BACKLOG,
                caller,
                f"device {device_id!r} has {queued} jobs queued or being submitted, at or past "
                f"[admission] max_queued_per_device ({self._s.max_queued_per_device}), and "
                f"project {project!r} has {mine} of them, its share of the bound; nothing was "
                "queued. The project queues more there as its jobs run; other projects and "
                "devices are not limited by it",
                self._s.overload_retry_seconds,
            )
        self._held[held] += 1
        return held

    def release(self, held: Sequence[Held]) -> None:
        """Give back the places `device_room` held for one call."""
        for place in held:
            self._held[place] -= 1
            if self._held[place] <= 0:
                del self._held[place]

    def has_room(self, device_id: str, project: str) -> bool:
        """Whether the device takes one more job of the project now (device selection prefers
        those that do)."""
        return not self._s.max_queued_per_device or self._backlog(device_id, project) is None

    def _backlog(self, device_id: str, project: str) -> tuple[int, int] | None:
        """None when the device takes one more job of the project; else (jobs queued or held
        there, the project's)."""
        bound = self._s.max_queued_per_device
        depths = collections.Counter(self._lane_depths(device_id))
        for (device, held_project), count in self._held.items():
            if device == device_id:
                depths[held_project] += count
        queued = sum(depths.values())
        if queued < bound:
            return None
        weights = {p: self._weight(p) for p in {*depths, project}}
        mine = depths[project]
        if mine < bound * weights[project] / sum(weights.values()):
            return None  # the device is full of other projects' work: this one's share is not
        return queued, mine

    def _weight(self, project: str) -> int:
        return max(1, self._weight_of(project))

    def _refuse(self, reason: str, caller: str, message: str, wait: float) -> BrokerError:
        self._metrics.admission_refusals.labels(reason).inc()
        self._log.tally(reason, caller)
        return resource_exhausted(message, wait, rule_id=f"admission.{reason}")

    async def flush(self, *, force: bool = False) -> None:
        """Audit the window's refusals once it has run its length (on the tick; at shutdown
        with `force`): one entry per reason and principal, with the count."""
        await self._log.flush(force=force)
