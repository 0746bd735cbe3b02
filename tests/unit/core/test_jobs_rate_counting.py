"""The submission-rate detector counts what was accepted; refusals are the denial detector's."""

from __future__ import annotations

import pytest

from broker.errors import BrokerError
from tests.unit.core.harness import Core, request


async def test_refused_submissions_are_not_counted_as_submissions(core: Core) -> None:
    await core.register()
    await core.register("dev-r", tier="restricted")
    rate = core.parts.registries.anomalies.rate
    submission = core.parts.services.submission
    for _ in range(3):
        with pytest.raises(BrokerError):
            await submission.submit_many("alice", [request("dev-r")])  # hidden: NOT_FOUND
        with pytest.raises(BrokerError):
            await submission.submit_many("alice", [request(shots=0)])  # invalid
    before = rate.count("alice")
    await submission.submit_many("alice", [request(), request()])
    assert before == 0
    assert rate.count("alice") == 2
