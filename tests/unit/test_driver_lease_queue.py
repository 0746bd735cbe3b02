"""The driver's lease queue (drivers/pipeline.py): leases run one at a time in grant order, a
connection holds no more than its limit, a lease cancelled before it starts is handed to the
runner marked cancelled (the agent then answers "cancelled" without running it), and the leases
of a connection that ended are never run."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import zmq
import zmq.asyncio

from drivers.pipeline import Answers, BusyClock, HeldLease, LeaseQueue
from qtestbed.v1 import driver_link_pb2 as link_pb


@pytest.fixture
def sockets() -> Iterator[tuple[zmq.asyncio.Socket, zmq.asyncio.Socket]]:
    ctx = zmq.asyncio.Context()
    first, second = ctx.socket(zmq.DEALER), ctx.socket(zmq.DEALER)
    yield first, second
    first.close(0)
    second.close(0)
    ctx.term()


def _lease(lease_id: str, sock: zmq.asyncio.Socket) -> HeldLease:
    return HeldLease(
        grant=link_pb.LeaseGrant(lease_id=lease_id, job_id=f"job-{lease_id}"), sock=sock
    )


async def test_leases_run_one_at_a_time_in_grant_order_within_the_limit(
    sockets: tuple[zmq.asyncio.Socket, zmq.asyncio.Socket],
) -> None:
    sock, other = sockets
    ran: list[tuple[str, bool]] = []
    running = 0

    async def run(lease: HeldLease) -> None:
        nonlocal running
        running += 1
        assert running == 1  # never two at once
        await asyncio.sleep(0.01)
        ran.append((lease.grant.lease_id, lease.cancelled))
        running -= 1

    clock = BusyClock()
    queue = LeaseQueue(run, 2, clock)
    assert queue.add(_lease("a", sock))
    assert queue.add(_lease("b", sock))
    assert not queue.add(_lease("c", sock))  # this connection holds its 2
    assert queue.add(_lease("d", other))  # another connection's count is its own
    queue.cancel("b", other)  # not that connection's lease: nothing happens
    queue.cancel("b", sock)
    await asyncio.sleep(0.2)
    assert ran == [("a", False), ("b", True), ("d", False)]
    assert clock.starved == 1  # only the first lease found the queue empty
    await queue.stop()


async def test_the_leases_of_an_ended_connection_are_never_run(
    sockets: tuple[zmq.asyncio.Socket, zmq.asyncio.Socket],
) -> None:
    sock, other = sockets
    ran: list[tuple[str, bool]] = []

    async def run(lease: HeldLease) -> None:
        ran.append((lease.grant.lease_id, lease.cancelled))
        await asyncio.sleep(0.01)

    queue = LeaseQueue(run, 4, BusyClock())
    for name in ("a", "b", "c"):
        queue.add(_lease(name, sock))
    queue.end_connection(sock)
    queue.add(_lease("d", other))
    await asyncio.sleep(0.2)
    assert ran == [("a", True), ("b", True), ("c", True), ("d", False)]
    await queue.stop()


def test_the_busy_clock_reports_the_fraction_of_the_span_spent_running() -> None:
    clock = BusyClock()
    clock.record(10.0, 11.0)
    clock.record(11.5, 12.0)
    report = clock.report()
    assert (report["jobs"], report["busy_seconds"], report["span_seconds"]) == (2, 1.5, 2.0)
    assert report["busy_fraction"] == 0.75
    assert report["runs"] == [[10.0, 11.0], [11.5, 12.0]]


async def test_answers_are_sent_beside_the_next_lease_and_drained_before_the_connection_closes(
    sockets: tuple[zmq.asyncio.Socket, zmq.asyncio.Socket],
) -> None:
    """The device goes on to the next lease while the last one's answer is signed and sent:
    the runner returns before its answer is out, an answer that fails (its connection gone)
    stops nothing, and a closing connection waits for the answers in flight."""
    sock, _ = sockets
    order: list[str] = []
    answers = Answers()

    async def answer(lease_id: str, fails: bool = False) -> None:
        await asyncio.sleep(0.02)  # signing and sending take a while
        if fails:
            raise zmq.ZMQError(zmq.ENOTSOCK)
        order.append(f"answered {lease_id}")

    async def run(lease: HeldLease) -> None:
        order.append(f"ran {lease.grant.lease_id}")
        answers.post(answer(lease.grant.lease_id, fails=lease.grant.lease_id == "b"))

    queue = LeaseQueue(run, 4, BusyClock())
    for name in ("a", "b", "c"):
        queue.add(_lease(name, sock))
    await asyncio.sleep(0.005)
    assert order == ["ran a", "ran b", "ran c"]  # none waited for an answer
    assert answers.in_flight == 3
    await answers.drain()
    assert order[3:] == ["answered a", "answered c"]
    assert answers.in_flight == 0
    await queue.stop()
