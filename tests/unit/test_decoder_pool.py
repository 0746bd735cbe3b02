"""The decoder pool (issue 15.1): N children, each one payload at a time; a deadline that grows
with the payload; a child killed by its payload is replaced while the others keep serving.

The first tests use fake members to hold calls open (what "N at a time" means is then a fact
the test controls); the last runs real confined children and a real slow OpenQASM 3 payload."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from qtestbed.shared.circuits import (
    DEFAULT_LIMITS,
    CircuitError,
    CircuitFormat,
    CircuitLimits,
    CircuitSummary,
    DecodeDeadline,
    DecoderPool,
)
from qtestbed.shared.circuits.confine import Confinement
from qtestbed.testing import eventually

QASM3 = CircuitFormat.OPENQASM3
SMALL = b'OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[2] q;\nbit[2] c;\nh q[0];\ncx q[0], q[1];\nc = measure q;\n'  # noqa: E501
SUMMARY = CircuitSummary(num_qubits=2, num_clbits=2, depth=3)


class FakeMember:
    """A pool member that records each call's deadline and, when told, holds calls open or
    dies on the next payload (as a child killed past its deadline does)."""

    def __init__(self, log: list[tuple[int, float | None]], hold: threading.Event) -> None:
        self.running = False
        self.confinement: Confinement | None = None
        self.starts = 0
        self.die_next = False
        self._log = log
        self._hold = hold
        self.inside = threading.Semaphore(0)

    def start(self) -> None:
        self.starts += 1
        self.running = True

    def close(self) -> None:
        self.running = False

    def summarize(
        self,
        fmt: CircuitFormat,
        payload: bytes,
        limits: CircuitLimits,
        *,
        timeout_s: float | None = None,
    ) -> CircuitSummary:
        self._log.append((len(payload), timeout_s))
        self.inside.release()
        self._hold.wait()
        if self.die_next:
            self.die_next = False
            self.running = False
            raise CircuitError("payload", "payload took longer than its deadline")
        return SUMMARY


def _fake_pool(
    size: int,
) -> tuple[DecoderPool, list[FakeMember], threading.Event, list[tuple[int, float | None]]]:
    calls: list[tuple[int, float | None]] = []
    hold = threading.Event()
    made: list[FakeMember] = []

    def member() -> FakeMember:
        made.append(FakeMember(calls, hold))
        return made[-1]

    pool = DecoderPool(size, deadline=DecodeDeadline(base_s=1.0, per_kib_s=0.5), member=member)
    pool.start()
    return pool, made, hold, calls


def test_each_payload_gets_a_deadline_proportional_to_its_size() -> None:
    pool, _, hold, calls = _fake_pool(1)
    hold.set()
    pool.summarize(QASM3, b"x" * 1024, DEFAULT_LIMITS)
    pool.summarize(QASM3, b"x" * 10 * 1024, DEFAULT_LIMITS)
    assert calls == [(1024, 1.5), (10 * 1024, 6.0)]


def test_a_pool_decodes_n_payloads_at_once_and_no_more() -> None:
    pool, members, hold, calls = _fake_pool(2)
    with ThreadPoolExecutor(max_workers=3) as callers:
        running = [callers.submit(pool.summarize, QASM3, SMALL, DEFAULT_LIMITS) for _ in range(3)]
        for member in members:  # one call inside each child
            assert member.inside.acquire(timeout=30)
        assert len(calls) == 2  # the third waits for a free child, not for a busy one
        hold.set()
        assert [f.result(timeout=30) for f in running] == [SUMMARY] * 3
    assert len(calls) == 3


def test_a_child_killed_by_its_payload_is_replaced_and_the_pool_keeps_serving() -> None:
    pool, members, hold, _ = _fake_pool(2)
    hold.set()
    members[0].die_next = members[1].die_next = True
    with pytest.raises(CircuitError, match="deadline"):
        pool.summarize(QASM3, SMALL, DEFAULT_LIMITS)
    eventually(lambda: pool.replaced == 1, what="the killed child to be replaced")
    assert sorted(m.starts for m in members) == [1, 2]
    for member in members:
        member.die_next = False
    assert [pool.summarize(QASM3, SMALL, DEFAULT_LIMITS) for _ in range(4)] == [SUMMARY] * 4
    assert all(m.running for m in members)


def test_real_children_a_slow_payload_past_its_deadline_is_killed_and_replaced() -> None:
    """About 200 KiB of OpenQASM 3 parses in seconds; its deadline here is half a second."""
    slow = SMALL + b"h q[0];\n" * (200 * 1024 // 8)
    pool = DecoderPool(2, deadline=DecodeDeadline(base_s=0.5, per_kib_s=0.0))
    pool.start()
    try:
        with pytest.raises(CircuitError, match=r"took longer than 0\.5 s") as caught:
            pool.summarize(QASM3, slow, DEFAULT_LIMITS)
        assert caught.value.field == "payload"
        # The other child serves at once; the killed one comes back.
        assert pool.summarize(QASM3, SMALL, DEFAULT_LIMITS).num_qubits == 2
        eventually(lambda: pool.replaced == 1, what="the killed child to be replaced")
        for _ in range(pool.size):
            assert pool.summarize(QASM3, SMALL, DEFAULT_LIMITS).depth == 3
        assert all(member.running for member in pool.members)
        assert all(member.confinement is not None for member in pool.members)
    finally:
        pool.close()


def test_a_closed_pool_wakes_its_waiting_callers_and_refuses_them() -> None:
    pool, members, hold, _ = _fake_pool(1)
    with ThreadPoolExecutor(max_workers=2) as callers:
        busy = callers.submit(pool.summarize, QASM3, SMALL, DEFAULT_LIMITS)
        assert members[0].inside.acquire(timeout=30)
        waiting = callers.submit(pool.summarize, QASM3, SMALL, DEFAULT_LIMITS)
        pool.close()
        hold.set()
        assert busy.result(timeout=30) == SUMMARY  # the call in progress finishes
        with pytest.raises(RuntimeError, match="closed"):
            waiting.result(timeout=30)
    assert members[0].starts == 1  # nothing restarted after close


class SlowStartingMember(FakeMember):
    """A member whose start waits until the test lets it finish (a child importing Qiskit)."""

    def __init__(self, log: list[tuple[int, float | None]], hold: threading.Event) -> None:
        super().__init__(log, hold)
        self.may_start = threading.Event()

    def start(self) -> None:
        assert self.may_start.wait(timeout=30)
        super().start()


def test_a_pool_started_in_background_serves_a_payload_only_once_a_child_is_up() -> None:
    calls: list[tuple[int, float | None]] = []
    hold = threading.Event()
    hold.set()
    member = SlowStartingMember(calls, hold)
    pool = DecoderPool(1, deadline=DecodeDeadline(base_s=1.0, per_kib_s=0.5), member=lambda: member)
    pool.start_in_background()  # returns at once, the child still starting
    with ThreadPoolExecutor(max_workers=1) as callers:
        waiting = callers.submit(pool.summarize, QASM3, SMALL, DEFAULT_LIMITS)
        assert not member.inside.acquire(timeout=0.3)  # nothing decoded before the child is up
        assert calls == []
        assert not waiting.done()
        member.may_start.set()
        assert waiting.result(timeout=30) == SUMMARY
    assert member.starts == 1
    assert len(calls) == 1
    pool.close()
