"""Each principal's share of the decoder pool, through the real core (issue 15.1): a principal
with its share of decodes in flight is refused at once with a retry delay, counted and audited
in aggregate, while another principal's decode is admitted; the share frees when one returns.

The decoder is a gate the test opens, so "in flight" is a fact the test holds, not a timing."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

import pytest

from broker.errors import BrokerError, ErrorCode
from broker.jobs.decode_gate import DecodingSettings
from broker.jobs.submit import SubmitRequest
from qtestbed.shared.circuits import (
    CircuitFormat,
    CircuitLimits,
    CircuitSummary,
    InProcessDecoder,
)
from tests.unit.core.harness import Core, audit_mark, audit_since, metric, request, stored_jobs


class HeldDecoder:
    """Decodes for real, but only once the test releases the call; counts calls entered."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self._entered = threading.Semaphore(0)
        self._real = InProcessDecoder()

    def summarize(
        self, fmt: CircuitFormat, payload: bytes, limits: CircuitLimits
    ) -> CircuitSummary:
        self._entered.release()
        self.release.wait()
        return self._real.summarize(fmt, payload, limits)

    async def entered(self) -> None:
        """Wait until one more call is inside the decoder."""
        await asyncio.to_thread(self._entered.acquire)


@pytest.fixture
async def held() -> AsyncIterator[tuple[Core, HeldDecoder]]:
    decoder = HeldDecoder()
    # A pool of two: each principal's share is one decode at a time.
    core = await Core(decoder=decoder, decoding=DecodingSettings(processes=2)).start()
    await core.register()
    try:
        yield core, decoder
    finally:
        decoder.release.set()
        core.close()


def _submit(core: Core, caller: str, job: SubmitRequest | None = None) -> asyncio.Task[object]:
    submission = core.parts.services.submission
    return asyncio.create_task(submission.submit_many(caller, [job or request()]))


async def test_a_principal_past_its_share_is_refused_with_a_retry_delay_while_others_are_admitted(
    held: tuple[Core, HeldDecoder],
) -> None:
    core, decoder = held
    gate = core.parts.jobs.decode_gate
    assert gate.share == 1
    first = _submit(core, "alice")
    await decoder.entered()  # alice's first decode holds her share
    mark = audit_mark(core)

    with pytest.raises(BrokerError) as refused:
        await core.parts.services.submission.submit_many("alice", [request()])
    error = refused.value
    assert error.code is ErrorCode.RESOURCE_EXHAUSTED
    assert error.rule_id == "decode.principal_share"
    assert error.retry_after_seconds == 1.0
    assert "retry in 1 s" in error.detail
    assert metric(core, "qtestbed_decode_refusals_total", reason="principal_share") == 1

    bobs = _submit(core, "bob")
    await decoder.entered()  # admitted: bob's decode is in the decoder beside alice's
    assert (gate.in_flight("alice"), gate.in_flight("bob")) == (1, 1)

    decoder.release.set()
    await asyncio.gather(first, bobs)
    assert sorted(job.owner for job in stored_jobs(core)) == ["alice", "bob"]
    assert (gate.in_flight("alice"), gate.in_flight("bob")) == (0, 0)
    # Her share is free again once her decode returned.
    await core.parts.services.submission.submit_many("alice", [request()])

    # Audited in aggregate: one entry for the window, with the count.
    assert not [e for e in audit_since(core, mark) if e.kind == "decode.refused"]
    await gate.flush(force=True)
    [entry] = [e for e in audit_since(core, mark) if e.kind == "decode.refused"]
    assert (entry.actor, entry.detail["reason"], entry.detail["count"]) == (
        "alice",
        "principal_share",
        1,
    )


async def test_a_refusal_in_a_batch_keeps_its_retry_delay(
    held: tuple[Core, HeldDecoder],
) -> None:
    core, decoder = held
    first = _submit(core, "alice")
    await decoder.entered()
    with pytest.raises(BrokerError) as refused:
        await core.parts.services.submission.submit_many("alice", [request(), request()])
    assert refused.value.code is ErrorCode.RESOURCE_EXHAUSTED
    assert refused.value.retry_after_seconds == 1.0
    assert refused.value.detail.startswith("job 1 of 2 (nothing in the batch was queued)")
    decoder.release.set()
    await first


def test_the_pool_is_sized_to_the_machine_within_bounds_and_a_share_is_half_of_it() -> None:
    assert 2 <= DecodingSettings().pool_size() <= 16
    assert DecodingSettings(processes=2).share() == 1
    assert DecodingSettings(processes=5).share() == 3
    assert DecodingSettings(processes=4, per_principal=3).share() == 3
    assert DecodingSettings(processes=2, per_principal=9).share() == 9  # set past the pool
    deadline = DecodingSettings(deadline_base_seconds=1.0, deadline_per_kib_seconds=0.5)
    assert deadline.deadline().for_size(4096) == 3.0
    for bad in (
        {"processes": -1},
        {"processes": 17},
        {"per_principal": -1},
        {"retry_after_seconds": 0},
        {"deadline_base_seconds": 0},
        {"deadline_per_kib_seconds": -1},
    ):
        with pytest.raises(ValueError, match=r"decoding|deadline"):
            DecodingSettings(**bad)


async def test_cancelling_and_resubmitting_cannot_take_more_than_the_share(
    held: tuple[Core, HeldDecoder],
) -> None:
    core, decoder = held
    gate = core.parts.jobs.decode_gate
    abandoned = _submit(core, "alice")
    await decoder.entered()  # her payload is in the decoder
    abandoned.cancel()  # she gives up on the call (a cancel, a deadline)...
    with pytest.raises(asyncio.CancelledError):
        await abandoned
    for _ in range(5):  # ...and sends it again, and again
        assert gate.in_flight("alice") == 1  # the decode is still running: the place is taken
        again = _submit(core, "alice")
        with pytest.raises(BrokerError) as refused:
            await again
        assert refused.value.code is ErrorCode.RESOURCE_EXHAUSTED
    assert metric(core, "qtestbed_decode_refusals_total", reason="principal_share") == 5

    bobs = _submit(core, "bob")
    await decoder.entered()  # bob is admitted beside her one decode
    assert (gate.in_flight("alice"), gate.in_flight("bob")) == (1, 1)
    decoder.release.set()
    await bobs
    for _ in range(100):  # her abandoned decode finishes in its thread, then frees the place
        if not gate.in_flight("alice"):
            break
        await asyncio.sleep(0.01)
    assert gate.in_flight("alice") == 0
    assert [job.owner for job in stored_jobs(core)] == ["bob"]  # nothing of hers was queued
    await core.parts.services.submission.submit_many("alice", [request()])
