"""Streams against a real broker process: a principal at its open-stream cap is refused with
RESOURCE_EXHAUSTED and a retry delay while another principal still watches and submits, and a
watcher that stops reading neither holds anyone up nor misses the job's latest state."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator

import grpc
import pytest

from qtestbed.cli.demo import ghz_qasm2
from qtestbed.client import Client, QtestbedError
from qtestbed.testing import LocalFacility, eventually
from qtestbed.v1 import jobs_pb2, jobs_pb2_grpc
from tests.integration.support import with_calls_table

CAP = 4


@pytest.fixture
def broker(facility: LocalFacility) -> LocalFacility:
    """A broker process whose [calls] table caps each principal at CAP streams."""
    with_calls_table(facility, f"streams_per_principal = {CAP}\nretry_after_seconds = 3")
    facility.start_broker_process()
    return facility


def _watch(client: Client, job_id: str) -> grpc.Future:
    stub = jobs_pb2_grpc.JobServiceStub(client.channel)
    return stub.WatchJob(jobs_pb2.WatchJobRequest(job_id=job_id), timeout=120)


def _submit(client: Client) -> jobs_pb2.Job:
    return client.submit(ghz_qasm2(2), device_id="sim-open", shots=10).job


def test_a_principal_at_its_stream_cap_is_refused_while_another_still_watches_and_submits(
    broker: LocalFacility,
) -> None:
    alice, bob = broker.client("alice"), broker.client("bob")
    job = _submit(alice)
    held = [_watch(alice, job.job_id) for _ in range(CAP)]
    for stream in held:
        assert next(stream).job.job_id == job.job_id  # each one open and answering
    with pytest.raises(QtestbedError) as exc:
        next(alice.watch(job.job_id, timeout=30))
    assert exc.value.code == "RESOURCE_EXHAUSTED"
    assert f"limit of {CAP} open streams" in exc.value.message
    assert "retry in 3 s" in exc.value.message
    assert exc.value.rule_id == "calls.stream_cap"
    assert exc.value.retry_after_seconds == 3  # the standard google.rpc.RetryInfo detail

    # Bob is admitted while alice is at her cap: he watches, and he submits.
    mine = _submit(bob)
    bobs = _watch(bob, mine.job_id)
    assert next(bobs).job.queue_position == 2
    assert bob.get_job(mine.job_id).job_id == mine.job_id
    bobs.cancel()

    # A stream alice closes gives her place back.
    held.pop().cancel()

    def reopened() -> jobs_pb2.JobEvent | None:
        stream = _watch(alice, job.job_id)
        try:
            event: jobs_pb2.JobEvent = next(stream)
        except grpc.RpcError as err:
            if err.code() is not grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise
            return None
        held.append(stream)
        return event

    eventually(reopened, what="alice's closed stream to free its place")
    metrics = broker.scrape()
    assert 'qtestbed_stream_refusals_total{reason="principal_cap"}' in metrics
    for stream in held:
        stream.cancel()


def test_a_watcher_that_stops_reading_holds_nobody_up_and_gets_the_latest_state(
    broker: LocalFacility,
) -> None:
    alice, bob = broker.client("alice"), broker.client("bob")
    ahead = [_submit(alice) for _ in range(40)]
    last = _submit(alice)
    mine = _submit(bob)
    stream: Iterator[jobs_pb2.JobEvent] = _watch(alice, last.job_id)
    first = next(stream).job.queue_position
    assert first == 42  # bob's job, in its own project, goes ahead of alice's backlog
    # The watcher reads nothing while every job of alice's ahead leaves; bob is still served.
    for job in ahead:
        alice.cancel(job.job_id)
        assert bob.get_job(mine.job_id).queue_position <= 2
    latest = alice.get_job(last.job_id).queue_position
    seen: list[jobs_pb2.Job] = []
    reader = threading.Thread(target=lambda: seen.extend(e.job for e in stream))
    reader.start()
    # Once it reads again, it reaches the latest position (position-only updates are paced,
    # so it may skip some between), never an older one after a newer.
    eventually(lambda: seen and seen[-1].queue_position == latest, what="the latest position")
    alice.cancel(last.job_id)
    reader.join(timeout=60)
    assert not reader.is_alive()
    assert seen[-1].state == jobs_pb2.JOB_STATE_CANCELLED  # the job's own change, then the end
    positions = [j.queue_position for j in seen if j.state == jobs_pb2.JOB_STATE_QUEUED]
    assert positions == sorted(positions, reverse=True)
    assert len(seen) <= len(ahead) + 1


def test_past_the_server_wide_call_limit_a_call_is_refused_with_retry_advice(
    facility: LocalFacility,
) -> None:
    with_calls_table(facility, "max_concurrent_rpcs = 3\nretry_after_seconds = 3")
    facility.start_broker_process()
    alice, bob = facility.client("alice"), facility.client("bob")
    job = _submit(alice)
    held = [_watch(alice, job.job_id) for _ in range(3)]
    for stream in held:
        assert next(stream).job.job_id == job.job_id  # three calls in progress: the limit
    with pytest.raises(QtestbedError) as exc:
        bob.get_job(job.job_id)
    assert exc.value.code == "RESOURCE_EXHAUSTED"
    assert "limit of 3 concurrent calls" in exc.value.message
    assert exc.value.rule_id == "calls.concurrent_rpcs"
    assert exc.value.retry_after_seconds == 3
    held.pop().cancel()
    mine = eventually(lambda: _admitted(bob), what="a freed place to admit bob's call")
    assert mine.state == jobs_pb2.JOB_STATE_QUEUED
    counted = re.search(r"^qtestbed_concurrent_rpc_refusals_total (\S+)$", facility.scrape(), re.M)
    assert counted is not None
    assert float(counted.group(1)) >= 1
    for stream in held:
        stream.cancel()


def test_streams_on_a_deep_queue_cannot_crowd_another_principals_submits_out(
    facility: LocalFacility,
) -> None:
    """Streams whose jobs lie beyond the scheduler's in-memory window have their positions
    counted by the store. Every submission of bob's moves all of alice's watched jobs; asked
    one store call per stream, 1,500 streams once filled the store queue past admission's bound
    and shed every submission, bob's included. Asked together, they cost one read per move."""
    streams = 36
    with_calls_table(facility, f"streams_per_principal = {streams}\nposition_update_seconds = 0")
    facility.limits.setdefault("scheduling", {})["window_jobs"] = 2
    facility.limits.setdefault("admission", {})["max_store_queue"] = 4
    facility.start_broker_process()
    alice, bob = facility.client("alice"), facility.client("bob")
    watched = [_submit(alice).job_id for _ in range(streams)]
    seen: dict[str, list[jobs_pb2.Job]] = {job_id: [] for job_id in watched}
    opened = [_watch(alice, job_id) for job_id in watched]
    readers = [
        threading.Thread(target=_collect, args=(stream, seen[job_id]))
        for stream, job_id in zip(opened, watched, strict=True)
    ]
    for reader in readers:
        reader.start()
    eventually(lambda: all(seen.values()), what="every stream's first view")
    for _ in range(30):  # each one moves the watched jobs behind it; none may be shed
        _submit(bob)
    # Fair share between the projects put bob's jobs among alice's: her last is now last.
    assert alice.get_job(watched[-1]).queue_position == streams + 30
    for job_id in watched:
        _reaches(seen[job_id], alice.get_job(job_id).queue_position)
    assert 'reason="overload"' not in facility.scrape()
    for stream in opened:
        stream.cancel()
    for reader in readers:
        reader.join(timeout=30)


def _reaches(views: list[jobs_pb2.Job], position: int) -> None:
    eventually(
        lambda: views[-1].queue_position == position,
        what=f"the stream on {views[0].job_id} to reach position {position}",
    )


def _collect(stream: Iterator[jobs_pb2.JobEvent], into: list[jobs_pb2.Job]) -> None:
    """Every view a stream sends, until the test cancels it."""
    try:
        into.extend(event.job for event in stream)
    except grpc.RpcError as err:
        if err.code() is not grpc.StatusCode.CANCELLED:
            raise


def _admitted(client: Client) -> jobs_pb2.Job | None:
    try:
        return _submit(client)
    except QtestbedError as err:
        if "concurrent calls" not in str(err):
            raise
        return None
