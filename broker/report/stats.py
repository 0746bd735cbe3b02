"""The few statistics the report computes."""

from __future__ import annotations

import statistics
from collections.abc import Iterable


def median(values: Iterable[float]) -> float | None:
    """The median (mean of the middle two for an even count); None for no values."""
    data = sorted(values)
    return float(statistics.median(data)) if data else None


def queue_wait(
    *,
    created_at: float,
    dispatched_at: float | None,
    attempts: int,
    first_dispatch_at: float | None,
) -> float | None:
    """Seconds a job waited before it first left for a device; None if it never left.

    The jobs table keeps only the latest dispatch: a job whose lease expired and that was sent
    again (`attempts` > 1) has the second dispatch time there, so the first one comes from the
    audit log's `job.dispatched` entry for attempt 1 (`first_dispatch_at`) when it is known.
    """
    if attempts > 1 and first_dispatch_at is not None:
        when: float | None = first_dispatch_at
    elif attempts >= 1:
        when = dispatched_at if dispatched_at is not None else first_dispatch_at
    else:
        when = None
    if when is None:
        return None
    return max(0.0, when - created_at)
