"""WatchJob fan-out from memory: a change costs no store read per watcher, positions stay
exact, and a watcher that stops reading is coalesced to the latest state."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import pytest

from broker.jobs.views import JobView
from broker.jobs.watch import Subscription
from tests.unit.core.harness import Core, request
from tests.unit.scheduler_book import job


async def _queue(core: Core, n: int) -> list[str]:
    ids = []
    for _ in range(n):
        [(view, _)] = await core.parts.services.submission.submit_many("alice", [request()])
        ids.append(view.job.job_id)
        core.clock.advance(1)  # one second apart: a strict submission order
    return ids


def _count_store_calls(core: Core, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every call made on the store thread from now on, by the store method's name."""
    calls: list[str] = []
    original = core.runner.call

    async def counted(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        calls.append(getattr(fn, "__name__", repr(fn)))
        return await original(fn, *args, **kwargs)

    monkeypatch.setattr(core.runner, "call", counted)
    return calls


async def _watch(core: Core, job_id: str) -> tuple[AsyncIterator[JobView], JobView]:
    stream = core.parts.services.jobs.watch("alice", job_id)
    return stream, await anext(stream)


async def test_a_queue_change_reaches_every_watcher_without_a_store_read_each(
    core: Core, monkeypatch: pytest.MonkeyPatch
) -> None:
    await core.register()
    ids = await _queue(core, 22)
    calls = _count_store_calls(core, monkeypatch)
    await core.parts.services.jobs.cancel("alice", ids[0], "")
    alone = len(calls)  # what a cancel costs with nobody watching
    streams = [await _watch(core, job_id) for job_id in ids[2:]]
    assert [first.queue_position for _, first in streams] == list(range(2, 22))
    calls.clear()
    await core.parts.services.jobs.cancel("alice", ids[1], "")
    moved = await asyncio.wait_for(asyncio.gather(*(anext(s) for s, _ in streams)), 5)
    assert [v.queue_position for v in moved] == list(range(1, 21))  # every one exact
    assert len(calls) == alone, calls  # the cancel's own reads and write, none per watcher
    for stream, _ in streams:
        await stream.aclose()  # type: ignore[attr-defined]


async def test_a_job_queued_behind_a_watcher_does_not_wake_it(core: Core) -> None:
    await core.register()
    [first] = await _queue(core, 1)
    stream, view = await _watch(core, first)
    assert view.queue_position == 1
    await _queue(core, 5)  # all behind it: its position cannot move
    watchers = core.parts.jobs.watchers
    assert watchers.pending_for(first) is False
    await core.parts.services.jobs.cancel("alice", first, "")
    done = await asyncio.wait_for(anext(stream), 5)
    assert (done.job.state.value, done.queue_position) == ("CANCELLED", 0)
    await stream.aclose()  # type: ignore[attr-defined]


async def test_a_watcher_that_stops_reading_gets_the_latest_state_not_a_backlog(
    core: Core,
) -> None:
    await core.register()
    ids = await _queue(core, 60)
    stream, view = await _watch(core, ids[-1])
    assert view.queue_position == 60
    for job_id in ids[:-1]:  # 59 moves while the watcher does not read
        await core.parts.services.jobs.cancel("alice", job_id, "")
    latest = await asyncio.wait_for(anext(stream), 5)
    assert latest.queue_position == 1  # straight to the newest position, no 59-item backlog
    assert core.parts.jobs.watchers.pending_for(ids[-1]) is False
    await core.parts.services.jobs.cancel("alice", ids[-1], "")
    done = await asyncio.wait_for(anext(stream), 5)
    assert done.job.state.value == "CANCELLED"
    with pytest.raises(StopAsyncIteration):
        await anext(stream)
    assert len(core.parts.jobs.watchers) == 0  # a finished stream leaves nothing behind


async def test_position_only_updates_are_paced_while_the_jobs_own_changes_go_at_once() -> None:
    core = await Core(calls={"position_update_seconds": 3600}).start()
    try:
        await core.register()
        ids = await _queue(core, 4)
        stream, view = await _watch(core, ids[-1])
        assert view.queue_position == 4
        await core.parts.services.jobs.cancel("alice", ids[0], "")
        moved = await asyncio.wait_for(anext(stream), 5)  # the first move goes at once
        assert moved.queue_position == 3
        await core.parts.services.jobs.cancel("alice", ids[1], "")
        following = asyncio.ensure_future(anext(stream))
        done, _ = await asyncio.wait({following}, timeout=0.2)
        assert not done  # the second move waits out the pace (an hour here)
        await core.parts.services.jobs.cancel("alice", ids[-1], "")
        final = await asyncio.wait_for(following, 5)  # the job's own change does not wait
        assert (final.job.state.value, final.queue_position) == ("CANCELLED", 0)
        await stream.aclose()  # type: ignore[attr-defined]
    finally:
        core.close()


async def test_moves_that_arrive_while_a_stream_reads_its_position_wait_out_the_pace() -> None:
    """A deep job's position is counted by the store, which takes a while under load: the
    queue keeps moving meanwhile, and those moves must not wake the stream again the moment
    it has sent (1,500 streams then each re-read the store after every read, unpaced)."""
    sub = Subscription(job_id="j", device_id="d", position_every=lambda: 3600.0)
    sub.sent(7, version=1)  # the first view
    sub.offer_move()
    assert await asyncio.wait_for(sub.next(), 1) is None  # the first move goes at once
    sub.offer_move()  # the queue moves again while the stream reads its new position
    sub.sent(8, version=1)  # the same version: a position-only update
    waiting = asyncio.ensure_future(sub.next())
    done, _ = await asyncio.wait({waiting}, timeout=0.2)
    assert not done  # the pace (an hour here) runs from the wake-up
    assert sub.pending  # the move is kept for when the pace ends
    sub.offer_job(replace(job("j", "p", at=1.0), version=1))  # the version it sent: no news
    assert not sub.pending_job
    newer = replace(job("j", "p", at=1.0), version=2)
    sub.offer_job(newer)  # the job's own change still goes at once
    assert await asyncio.wait_for(waiting, 1) is newer
    sub.close()


async def test_a_broker_that_shares_its_store_with_nobody_wakes_no_stream_on_its_tick(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The tick's look for other replicas' changes finds none where no other process writes:
    it must not re-read the watched jobs and hand them to their streams as news (on SQLite
    that woke every stream twice a second, past its pace, and re-read every watched job)."""
    calls = {"position_update_seconds": 3600.0}
    core = await Core(calls=calls).start()
    try:
        await core.register()
        ids = await _queue(core, 3)
        stream, _ = await _watch(core, ids[-1])
        await core.parts.services.jobs.cancel("alice", ids[0], "")
        assert (await asyncio.wait_for(anext(stream), 5)).queue_position == 2
        await core.parts.services.jobs.cancel("alice", ids[1], "")  # paced: an hour
        store_calls = _count_store_calls(core, monkeypatch)
        following = asyncio.ensure_future(anext(stream))
        for _ in range(3):
            core.clock.advance(1)
            await core.parts.link.replicas.poll()
        done, _ = await asyncio.wait({following}, timeout=0.2)
        assert not done
        assert not {"get_jobs", "get_job"} & set(store_calls), store_calls
        following.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await following
        await stream.aclose()  # type: ignore[attr-defined]
    finally:
        core.close()


async def test_one_principals_streams_share_one_budget_of_position_updates() -> None:
    """Each of a principal's streams is paced to max(position_update_seconds, its streams /
    position_updates_per_principal): 1,500 streams of one principal cost the loop what a few
    do, while the job's own changes still go at once."""
    calls = {"position_update_seconds": 0.0, "position_updates_per_principal": 2.0}
    core = await Core(calls=calls).start()
    try:
        await core.register()
        ids = await _queue(core, 5)
        watchers = core.parts.jobs.watchers
        streams = [(await _watch(core, job_id))[0] for job_id in ids[2:]]
        assert watchers.pace_of("alice") == 1.5  # three streams, two updates a second
        assert watchers.pace_of("bob") == 0.0  # another principal's budget is untouched
        await core.parts.services.jobs.cancel("alice", ids[0], "")
        first = await asyncio.wait_for(anext(streams[-1]), 5)  # the first move goes at once
        assert first.queue_position == 4
        await core.parts.services.jobs.cancel("alice", ids[1], "")
        following = asyncio.ensure_future(anext(streams[-1]))
        done, _ = await asyncio.wait({following}, timeout=0.3)
        assert not done  # the next move waits out the shared pace
        moved = await asyncio.wait_for(following, 5)
        assert moved.queue_position == 3  # and is exact when it goes
        for stream in streams:
            await stream.aclose()  # type: ignore[attr-defined]
        assert watchers.pace_of("alice") == 0.0
    finally:
        core.close()
