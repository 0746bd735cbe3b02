"""Token buckets for admission: a bucket holds up to `burst` tokens and refills at `rate`
tokens per second; a call costing n is admitted only when n tokens are there, and a refused
call takes nothing. Time comes from the clock port, so the arithmetic is tested without sleeping.

`BucketTable` keeps one bucket per key (a principal) in bounded memory: a full bucket is the same
as a fresh one, so idle full buckets are dropped when the table is full and nothing is lost.
"""

from __future__ import annotations

from dataclasses import dataclass

# Epoch seconds as floats resolve to about 0.24 us today: waits below this are rounding.
_CLOCK_SLACK = 1e-6


@dataclass(frozen=True, slots=True)
class BucketShape:
    rate: float  # tokens per second
    burst: float  # most tokens held (and the largest cost ever admitted)

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst <= 0:
            raise ValueError("a token bucket needs a positive rate and burst")


class TokenBucket:
    def __init__(self, shape: BucketShape, now: float) -> None:
        self._shape = shape
        self._tokens = shape.burst
        self._at = now

    def tokens(self, now: float) -> float:
        """The tokens held at `now` (time that runs backwards refills nothing)."""
        elapsed = max(now - self._at, 0.0)
        return min(self._shape.burst, self._tokens + elapsed * self._shape.rate)

    def wait(self, cost: float, now: float) -> float:
        """Seconds until `cost` tokens are there: 0 when they are now. A wait shorter than the
        clock's rounding is none, so a caller who waits exactly the delay given is admitted."""
        missing = min(cost, self._shape.burst) - self.tokens(now)
        seconds = max(missing, 0.0) / self._shape.rate
        return 0.0 if seconds <= _CLOCK_SLACK else seconds

    def take(self, cost: float, now: float) -> None:
        """Take `cost` tokens; the caller checked `wait(cost, now) == 0` first."""
        self._tokens = self.tokens(now) - cost
        self._at = max(now, self._at)

    def full(self, now: float) -> bool:
        return self.wait(self._shape.burst, now) == 0


class TableFull(Exception):
    """Every tracked bucket is still refilling and the table holds its most keys."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"bucket table full; a slot frees in {retry_after:.1f} s")
        self.retry_after = retry_after


class BucketTable:
    """One bucket per key, at most `max_keys` of them."""

    def __init__(self, shape: BucketShape, max_keys: int) -> None:
        if max_keys < 1:
            raise ValueError("a bucket table holds at least one key")
        self._shape = shape
        self._max = max_keys
        self._buckets: dict[str, TokenBucket] = {}

    def __len__(self) -> int:
        return len(self._buckets)

    def bucket(self, key: str, now: float) -> TokenBucket:
        """The key's bucket, made full when new; TableFull when there is no room for it."""
        found = self._buckets.get(key)
        if found is not None:
            return found
        if len(self._buckets) >= self._max:
            self._evict_full(now)
        if len(self._buckets) >= self._max:
            soonest = min(b.wait(self._shape.burst, now) for b in self._buckets.values())
            raise TableFull(soonest)
        made = self._buckets[key] = TokenBucket(self._shape, now)
        return made

    def _evict_full(self, now: float) -> None:
        # One pass over the table, only when it is full: a full bucket equals a fresh one.
        for key in [k for k, b in self._buckets.items() if b.full(now)]:
            del self._buckets[key]
