"""The scheduler with its queues in the store and only each lane's front in memory: on random
workloads every position, and every pick of the dispatcher, equals the all-in-memory reference
scheduler's (tests/unit/reference_scheduler.py) whatever the window size, through window
refills, store-counted positions, holds (projects, sessions) and a restart; backlogged projects
share by weight, aging bounds overtaking, and take_moves never misses a moved job."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from broker.jobs.model import PRIORITY_HIGH, PRIORITY_LOW, PRIORITY_NORMAL
from broker.store.base import BrokerStore
from broker.store.memory import MemoryStore
from broker.store.sql_queue import SqlQueue
from broker.store.sqlite import SqliteStore
from tests.unit.scheduler_book import WEIGHTS, Book, dispatched, job

PRIORITIES = [PRIORITY_LOW, PRIORITY_NORMAL, PRIORITY_HIGH]
STORES: dict[str, Callable[[Path], BrokerStore]] = {
    "memory": lambda _: MemoryStore(),
    "sqlite": lambda tmp: SqliteStore(tmp / "queue.db"),
}


@pytest.fixture(params=sorted(STORES))
async def make_book(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Callable[..., Book]]:
    books: list[Book] = []

    def make(**settings: float) -> Book:
        book = Book(STORES[request.param](tmp_path / f"b{len(books)}"), **settings)  # type: ignore[arg-type]
        books.append(book)
        return book

    for n in range(8):
        (tmp_path / f"b{n}").mkdir()
    yield make
    for book in books:
        book.close()


async def random_step(book: Book, rng: random.Random, step: int, now: float) -> None:
    action = rng.random()
    if action < 0.55 or not book.queued:
        await book.submit(
            job(
                f"j{step}",
                rng.choice("abc"),
                now - rng.choice([0.0, 0.0, 30.0]),
                rng.choice(PRIORITIES),
                shots=rng.choice([10, 100, 1000]),
                session_id=rng.choice(["", "", "", "s1"]),
            )
        )
    elif action < 0.8:
        hold = rng.choice([None, None, ["a"], ["b", "c"]])
        session = rng.choice([None, None, None, "s1"])
        await book.dispatch_next(now, hold, session)
    elif action < 0.93:
        await book.cancel(rng.choice(sorted(book.queued)), now)
    elif book.running:
        await book.requeue(rng.choice(sorted(book.running)), now)


async def follow_random_workload(book: Book, rng: random.Random, steps: int) -> None:
    now = 0.0
    for step in range(steps):
        now += rng.random()
        await random_step(book, rng, step, now)
        assert await book.positions() == book.reference_positions(), step
        assert book.scheduler.depth("dev") == len(book.queued)
        if step % 7 == 0:
            for chunk in (1, 2, 5):
                assert store_positions(book, chunk) == book.reference_positions_of_all(), step
    restarted = book.fresh_scheduler()
    await restarted.load()
    assert await book.positions(restarted) == book.reference_positions()
    assert restarted.depth("dev") == len(book.queued)


@pytest.mark.parametrize("seed", range(12))
async def test_positions_and_picks_equal_the_all_in_memory_order(
    make_book: Callable[..., Book], seed: int
) -> None:
    rng = random.Random(seed)
    book = make_book(aging=rng.choice([0.5, 5.0, 50.0]), window=rng.choice([2, 3, 5, 64]))
    await follow_random_workload(book, rng, 140)


@pytest.mark.postgres
@pytest.mark.parametrize("window", [2, 64])
async def test_postgresql_indexes_give_the_same_order(pg_dsn: str, window: int) -> None:
    """The same on PostgreSQL (its row-value index scans; float tags round-trip exactly)."""
    from broker.store.postgres import PostgresStore

    schema = f"qtestbed_sched_{uuid.uuid4().hex[:12]}"
    book = Book(PostgresStore(pg_dsn, schema=schema), aging=5.0, window=window)
    try:
        await follow_random_workload(book, random.Random(window), 50)
    finally:
        book.close()
        import psycopg

        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


async def test_a_long_lane_is_read_a_window_at_a_time_in_order(
    make_book: Callable[..., Book],
) -> None:
    book = make_book(window=4)
    for n in range(40):
        await book.submit(job(f"a{n}", "a", float(n), rng_priority(n)))
        await book.submit(job(f"b{n}", "b", float(n)))
    assert await book.positions() == book.reference_positions()  # counted by the store
    for n in range(80):
        assert book.scheduler.held("dev") <= 2 * 4
        assert await book.dispatch_next(100.0 + n) is not None
    assert await book.dispatch_next(200.0) is None


def store_positions(book: Book, chunk: int) -> dict[str, int | None]:
    """The store's positions for every queued job and for stale queued versions of jobs that
    left the queue (None), read together in ranges of `chunk` rows."""
    jobs = book.all_jobs_as_queued()
    if isinstance(book.store, SqlQueue):
        return book.store.queue_positions("dev", jobs, chunk=chunk)
    return book.store.queue_positions("dev", jobs)


async def test_positions_asked_together_cost_one_store_read(
    make_book: Callable[..., Book],
) -> None:
    """Streams on a deep queue that ask together share one read, however many they are."""
    book = make_book(window=2)
    for n in range(60):
        await book.submit(job(f"j{n}", "abc"[n % 3], float(n), rng_priority(n)))
    assert await book.positions() == book.reference_positions()  # windows read
    calls = book.runner.calls
    assert await book.positions() == book.reference_positions()
    assert book.runner.calls - calls == 1


async def test_callers_that_find_a_lane_short_together_share_one_read(
    make_book: Callable[..., Book],
) -> None:
    """Streams opened at once on a restarted broker (windows not read yet) wait for one read
    of each lane, not one each."""
    book = make_book(window=2)
    for n in range(60):
        await book.submit(job(f"j{n}", "abc"[n % 3], float(n), rng_priority(n)))
    restarted = book.fresh_scheduler()
    await restarted.load()
    calls = book.runner.calls
    assert await book.positions(restarted) == book.reference_positions()
    assert book.runner.calls - calls <= 3 + 1  # each lane's window once, then the positions


def rng_priority(n: int) -> int:
    return PRIORITIES[n * 7 % 3]


async def test_backlogged_projects_share_by_weight(make_book: Callable[..., Book]) -> None:
    book = make_book(window=16)
    for n in range(100):
        for project in WEIGHTS:
            await book.submit(job(f"{project}{n}", project, float(n)))
    served = {p: 0 for p in WEIGHTS}
    for n in range(120):
        head = await book.dispatch_next(1000.0 + n)
        assert head is not None
        served[head.project] += 1
    assert served == {"a": 30, "b": 30, "c": 60}


async def test_a_job_is_overtaken_only_by_jobs_submitted_within_the_aging_window(
    make_book: Callable[..., Book],
) -> None:
    book = make_book(aging=10.0, window=4)
    low = await book.submit(job("low", "a", 100.0, PRIORITY_LOW))
    highs = [await book.submit(job(f"h{n}", "a", 100.0 + 3 * n, PRIORITY_HIGH)) for n in range(12)]
    # HIGH is two classes above LOW: a 20 s head start.
    ahead = [h for h in highs if h.created_at - 20.0 < low.created_at]
    assert await book.scheduler.position(low) == len(ahead) + 1
    for n, h in enumerate(ahead):
        assert await book.scheduler.position(h) == n + 1


async def test_an_idle_project_earns_no_credit(make_book: Callable[..., Book]) -> None:
    book = make_book(window=8)
    for n in range(50):
        await book.submit(job(f"a{n}", "a", float(n)))
    for n in range(40):
        await book.dispatch_next(100.0 + n)
    # b arrives late: it shares from now on, it does not get 40 jobs' worth of catch-up.
    for n in range(20):
        await book.submit(job(f"b{n}", "b", 200.0 + n))
    picked = [await book.dispatch_next(300.0 + n) for n in range(10)]
    assert [j.project for j in picked if j is not None].count("b") == 5


async def test_a_requeued_job_goes_back_to_the_head_of_its_project(
    make_book: Callable[..., Book],
) -> None:
    book = make_book(window=2)
    for n in range(5):
        await book.submit(job(f"x{n}", "a", float(n)))
    head = await book.dispatch_next(10.0)
    assert head is not None
    await book.requeue(head.job_id, 11.0)
    assert await book.scheduler.position(book.queued[head.job_id]) == 1


@pytest.mark.parametrize("seed", range(8))
async def test_a_change_moves_no_job_ahead_of_the_position_take_moves_names(
    make_book: Callable[..., Book], seed: int
) -> None:
    """WatchJob wakes only the streams at or behind `take_moves`' position: a job ahead of it
    whose position changed would be a stream left showing a stale position."""
    rng = random.Random(seed)
    book = make_book(aging=rng.choice([0.5, 5.0, 50.0]), window=rng.choice([2, 4, 64]))
    now = 0.0
    for step in range(120):
        before = book.reference_positions()
        now += rng.random()
        await random_step(book, rng, step, now)
        moves = book.scheduler.take_moves()
        after = book.reference_positions()
        changed = [i for i in before.keys() & after.keys() if before[i] != after[i]]
        if changed:
            start = moves["dev"]
            assert all((before[i] or 0) >= start for i in changed), (step, start, changed)
        assert book.scheduler.take_moves() == {}


@pytest.mark.parametrize("window", [2, 64])
async def test_claimed_jobs_are_passed_over_in_run_order_but_stay_queued(
    make_book: Callable[..., Book], window: int
) -> None:
    """One dispatch pass picks several leases before any is written: each pick claims its
    job, so the next pick is the job that follows it in run order, while the lanes (and the
    depth, which the queue sync compares with the store's) still count it as queued. A pick
    whose slot lies past the windows waits for the next pass."""
    book = make_book(window=window)
    for n in range(6):
        for project in WEIGHTS:
            await book.submit(job(f"{project}{n}", project, float(n), shots=10 * (n + 1)))
    s = book.scheduler
    claimed = []
    while (head := await s.next_job("dev")) is not None:
        claimed.append(head.job_id)
        s.claim(head.job_id)
    assert s.depth("dev") == 18
    assert len(claimed) == 18 if window == 64 else 3 <= len(claimed) < 18
    s.unclaim(claimed[-1])  # its write failed: next in line again, in its place
    head = await s.next_job("dev")
    assert head is not None
    assert head.job_id == claimed[-1]
    s.claim(claimed[-1])
    for picked in claimed:  # each write lands, in run order: the job leaves, claim and all
        expected = book.reference.next_job("dev")
        assert expected is not None
        assert expected.job_id == picked
        await book.save(book.queued[picked], dispatched(book.queued[picked], 100.0))
    assert s.depth("dev") == 18 - len(claimed)
    assert await book.positions() == book.reference_positions()


async def test_a_forgotten_claim_is_picked_again_from_the_store(
    make_book: Callable[..., Book],
) -> None:
    book = make_book(window=4)
    for n in range(3):
        await book.submit(job(f"a{n}", "a", float(n)))
    s = book.scheduler
    head = await s.next_job("dev")
    assert head is not None
    s.claim(head.job_id)
    s.forget(head)  # another writer changed it: the store's word is taken afresh
    again = await s.next_job("dev")
    assert again is not None
    assert again.job_id == head.job_id
