"""A store outage is told once as it starts and once as it ends, however many calls fail in
between; each ended outage waits to be audited until the audit log has it."""

from __future__ import annotations

import logging

import pytest

from broker.store.health import StoreHealth


class Ticks:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_outage_is_logged_and_heard_once_at_each_end(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="broker.store.health")
    clock = Ticks()
    health = StoreHealth(monotonic=clock)
    heard: list[bool] = []
    health.on_change(heard.append)
    health.answered()
    for _ in range(50):
        health.failed(OSError("connection refused"), calls=3)
    clock.now += 7.5
    health.answered()
    health.answered()
    assert heard == [True, False, True]
    assert health.available
    assert health.outages == 1
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert "store outage began: connection refused" in messages[0]
    assert "store outage ended after 7.5 s (150 store calls failed meanwhile)" in messages[1]
    [ended] = health.ended()
    assert (ended.seconds, ended.failed_calls) == (7.5, 150)
    health.audited(ended)
    assert health.ended() == []


def test_a_second_outage_is_a_second_one() -> None:
    health = StoreHealth(monotonic=Ticks())
    for _ in range(2):
        health.failed(OSError("locked"), calls=1)
        assert not health.available
        health.answered()
    assert health.outages == 2
    assert [o.failed_calls for o in health.ended()] == [1, 1]
