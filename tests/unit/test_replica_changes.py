"""What replicas tell each other (broker/store/changes.py) and where a driver looks for its
brokers (drivers/config.py)."""

from __future__ import annotations

import pytest

from broker.store import changes
from drivers.config import broker_endpoints


def test_change_topics_round_trip() -> None:
    assert changes.parse(changes.ACCESS) == changes.Change("access")
    assert changes.parse(changes.DEVICES) == changes.Change("devices")
    assert changes.parse(changes.jobs("sim-open")) == changes.Change("jobs", "sim-open")


@pytest.mark.parametrize("payload", ["", "jobs:", "sessions", "ACCESS", "jobs"])
def test_unknown_topics_are_ignored(payload: str) -> None:
    assert changes.parse(payload) is None


@pytest.mark.parametrize(
    ("written", "endpoints"),
    [
        ("tcp://a:1", ("tcp://a:1",)),
        ("tcp://a:1, tcp://b:2", ("tcp://a:1", "tcp://b:2")),
        (["tcp://a:1", "tcp://b:2"], ("tcp://a:1", "tcp://b:2")),
        (" , ", ()),
    ],
)
def test_broker_endpoints_as_written(written: object, endpoints: tuple[str, ...]) -> None:
    assert broker_endpoints(written) == endpoints
