"""Token-bucket arithmetic and the bounded per-principal table, on a fake clock."""

from __future__ import annotations

import pytest

from broker.clock import FakeClock
from broker.jobs.submit import MAX_BATCH
from broker.jobs.token_bucket import BucketShape, BucketTable, TableFull, TokenBucket
from broker.settings import LARGEST_BATCH, AdmissionSettings, SettingsError

SHAPE = BucketShape(rate=10.0, burst=100.0)


def test_a_new_bucket_is_full_and_a_refused_cost_takes_nothing() -> None:
    clock = FakeClock()
    bucket = TokenBucket(SHAPE, clock.now())
    assert bucket.wait(100, clock.now()) == 0
    bucket.take(100, clock.now())
    assert bucket.wait(1, clock.now()) == pytest.approx(0.1)
    assert bucket.wait(50, clock.now()) == pytest.approx(5.0)
    # Asking did not take: the wait for one token is still a tenth of a second.
    assert bucket.wait(1, clock.now()) == pytest.approx(0.1)


def test_waiting_exactly_the_delay_given_is_enough_on_epoch_clocks() -> None:
    # Epoch seconds round to about 0.24 us: the delay the bucket gives must still suffice.
    clock = FakeClock(1_800_000_000.123)
    bucket = TokenBucket(SHAPE, clock.now())
    bucket.take(100, clock.now())
    for cost in (1, 3, 7, 33, 100):
        delay = bucket.wait(cost, clock.now())
        assert delay > 0
        clock.advance(delay)
        assert bucket.wait(cost, clock.now()) == 0
        bucket.take(cost, clock.now())


def test_refill_stops_at_the_burst_and_time_running_backwards_refills_nothing() -> None:
    clock = FakeClock()
    bucket = TokenBucket(SHAPE, clock.now())
    bucket.take(100, clock.now())
    clock.advance(3600)
    assert bucket.tokens(clock.now()) == 100
    assert bucket.full(clock.now())
    bucket.take(100, clock.now())
    assert bucket.tokens(clock.now() - 50) == 0


def test_a_table_evicts_idle_full_buckets_and_never_holds_more_than_its_bound() -> None:
    clock = FakeClock()
    table = BucketTable(SHAPE, max_keys=2)
    table.bucket("alice", clock.now()).take(100, clock.now())
    table.bucket("bob", clock.now()).take(1, clock.now())
    with pytest.raises(TableFull) as full:
        table.bucket("carol", clock.now())
    assert full.value.retry_after == pytest.approx(0.1)  # bob's refills first
    assert len(table) == 2
    clock.advance(full.value.retry_after)
    table.bucket("carol", clock.now())  # bob's bucket was full again: dropped, nothing lost
    assert len(table) == 2
    # alice is still refilling: her bucket was kept, with what she took.
    assert table.bucket("alice", clock.now()).tokens(clock.now()) == pytest.approx(1.0)


def test_settings_refuse_a_burst_below_the_largest_batch() -> None:
    assert LARGEST_BATCH == MAX_BATCH
    with pytest.raises(SettingsError, match="principal_burst must be at least 100"):
        AdmissionSettings(principal_burst=99)
    with pytest.raises(SettingsError, match="facility_jobs_per_second must be positive"):
        AdmissionSettings(facility_jobs_per_second=0)
    with pytest.raises(SettingsError, match="max_store_queue must be at least 1"):
        AdmissionSettings(max_store_queue=0)
    with pytest.raises(SettingsError, match="max_queued_per_device must be 0"):
        AdmissionSettings(max_queued_per_device=99)
