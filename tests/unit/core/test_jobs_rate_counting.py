"""The submission detectors count what was accepted, once per call: a SubmitJobs batch is one
submission call whose size goes to the job-volume detector; refusals (whole batches, or a batch
refused for one of its jobs) are the denial detector's; a retry that queues nothing counts
nothing."""

from __future__ import annotations

import pytest

from broker.errors import BrokerError
from tests.unit.core.harness import Core, request


async def test_refused_submissions_are_not_counted_as_submissions(core: Core) -> None:
    await core.register()
    await core.register("dev-r", tier="restricted")
    watch = core.parts.registries.anomalies.submissions
    submission = core.parts.services.submission
    for _ in range(3):
        with pytest.raises(BrokerError):
            await submission.submit_many("alice", [request("dev-r")])  # hidden: NOT_FOUND
        with pytest.raises(BrokerError):
            await submission.submit_many("alice", [request(shots=0)])  # invalid
    assert watch.rate.count("alice") == 0
    assert watch.volume.count("alice") == 0
    await submission.submit_many("alice", [request(), request()])
    assert watch.rate.count("alice") == 1  # one call
    assert watch.volume.count("alice") == 2  # of two jobs


async def test_a_batch_is_one_call_and_its_size_is_the_volume(core: Core) -> None:
    await core.register()
    watch = core.parts.registries.anomalies.submissions
    submission = core.parts.services.submission
    await submission.submit_many("alice", [request() for _ in range(100)])
    await submission.submit_many("alice", [request()])
    assert watch.rate.count("alice") == 2
    assert watch.volume.count("alice") == 101


async def test_a_partly_refused_batch_counts_as_a_refusal_not_a_submission(core: Core) -> None:
    await core.register()
    await core.register("dev-r", tier="restricted")
    anomalies = core.parts.registries.anomalies
    submission = core.parts.services.submission
    # Bob (restricted tier) sees dev-r; alice does not: her batch with one job for it is
    # refused whole at that job, and nothing of it was submitted.
    batch = [request() for _ in range(50)] + [request("dev-r")] + [request() for _ in range(49)]
    with pytest.raises(BrokerError, match="job 51 of 100"):
        await submission.submit_many("alice", batch)
    assert anomalies.submissions.rate.count("alice") == 0
    assert anomalies.submissions.volume.count("alice") == 0
    # An invalid job anywhere in a batch refuses it whole too.
    with pytest.raises(BrokerError, match="job 2 of 2"):
        await submission.submit_many("alice", [request(), request(shots=0)])
    assert anomalies.submissions.volume.count("alice") == 0


async def test_a_retry_that_queues_nothing_new_counts_nothing(core: Core) -> None:
    await core.register()
    watch = core.parts.registries.anomalies.submissions
    submission = core.parts.services.submission
    batch = [request(idempotency_key=f"sweep-{n}") for n in range(10)]
    await submission.submit_many("alice", batch)
    results = await submission.submit_many("alice", batch)  # the client's retry
    assert [created for _, created in results] == [False] * 10
    assert watch.rate.count("alice") == 1
    assert watch.volume.count("alice") == 10
