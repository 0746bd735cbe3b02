"""A pool of isolated decoder children, each decoding one payload at a time.

One child behind one lock lets one caller's slow payloads (OpenQASM 3 parses at about
20 microseconds a byte) hold up everybody's validation. The pool keeps several children, each
confined like the single one was (`IsolatedDecoder` confines every child before its first
payload), and gives each payload a deadline proportional to its size: a child past its deadline
is killed, its caller told so, and the child replaced in the background while the others serve.

Who may use how many children at once is the caller's business (the broker's `DecodeGate`);
this module only bounds each payload's time and memory.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from qtestbed.shared.circuits.confine import Confinement
from qtestbed.shared.circuits.isolated import IsolatedDecoder
from qtestbed.shared.circuits.model import CircuitFormat, CircuitLimits, CircuitSummary

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True, slots=True)
class DecodeDeadline:
    """How long a payload may take to decode: `base_s` plus `per_kib_s` per KiB of payload."""

    base_s: float
    per_kib_s: float

    def __post_init__(self) -> None:
        if self.base_s <= 0 or self.per_kib_s < 0:
            raise ValueError("a decode deadline needs a positive base and a per-KiB share >= 0")

    def for_size(self, size: int) -> float:
        return self.base_s + self.per_kib_s * size / 1024


class PoolMember(Protocol):
    """What the pool needs of one child (an `IsolatedDecoder`, or a fake in unit tests)."""

    @property
    def running(self) -> bool: ...

    @property
    def confinement(self) -> Confinement | None: ...

    def start(self) -> None: ...

    def close(self) -> None: ...

    def summarize(
        self,
        fmt: CircuitFormat,
        payload: bytes,
        limits: CircuitLimits,
        *,
        timeout_s: float | None = None,
    ) -> CircuitSummary: ...


class DecoderPool:
    """`size` decoder children; `summarize` blocks until one is free, then decodes on it.

    Call it from threads (never an event loop): it blocks for the whole decode.
    """

    def __init__(
        self,
        size: int,
        *,
        deadline: DecodeDeadline,
        memory_bytes: int = 1 << 30,
        member: Callable[[], PoolMember] | None = None,
    ) -> None:
        if size < 1:
            raise ValueError("a decoder pool needs at least one child")
        self.deadline = deadline
        make = member or (lambda: IsolatedDecoder(memory_bytes=memory_bytes))
        self.members: tuple[PoolMember, ...] = tuple(make() for _ in range(size))
        self._idle: queue.SimpleQueue[PoolMember] = queue.SimpleQueue()
        self._replaced = 0
        self._replaced_lock = threading.Lock()
        self._closed = threading.Event()

    @property
    def size(self) -> int:
        return len(self.members)

    @property
    def replaced(self) -> int:
        """Children killed by a payload (deadline, memory, crash) and replaced so far."""
        with self._replaced_lock:
            return self._replaced

    @property
    def confinement(self) -> Confinement | None:
        """What a child can still reach once confined (all are confined alike)."""
        return self.members[0].confinement

    def start(self) -> None:
        """Start every child now, side by side (each takes a second or two to import Qiskit)."""
        with ThreadPoolExecutor(max_workers=self.size) as starting:
            for _ in starting.map(lambda m: m.start(), self.members):
                pass
        for member in self.members:
            self._idle.put(member)

    def start_in_background(self) -> None:
        """Start every child on a thread of its own and put each in service once it is up.

        The caller goes on at once (a broker answers calls while its children import Qiskit);
        a payload that comes first waits for a child as it waits for a busy one, and is never
        decoded anywhere else. A child that does not start is logged and put in service all
        the same: its first payload starts it again (`IsolatedDecoder` starts lazily).
        """
        for member in self.members:
            threading.Thread(
                target=self._bring_up, args=(member,), name="decoder-start", daemon=True
            ).start()

    def close(self) -> None:
        """Stop every child; callers still waiting for one are woken and refused."""
        self._closed.set()
        for member in self.members:
            member.close()
            self._idle.put(member)  # wakes a waiting caller, who sees the pool closed

    def summarize(
        self, fmt: CircuitFormat, payload: bytes, limits: CircuitLimits
    ) -> CircuitSummary:
        member = self._idle.get()
        if self._closed.is_set():
            self._idle.put(member)  # for the next waiting caller
            raise RuntimeError("the circuit decoder pool is closed (the broker is stopping)")
        try:
            return member.summarize(
                fmt, payload, limits, timeout_s=self.deadline.for_size(len(payload))
            )
        finally:
            if member.running or self._closed.is_set():
                self._idle.put(member)
            else:
                # The payload killed the child. Start its successor off this thread, so the
                # caller hears at once, and keep the member out of service until it is up.
                threading.Thread(
                    target=self._replace, args=(member,), name="decoder-replace", daemon=True
                ).start()

    def _replace(self, member: PoolMember) -> None:
        self._bring_up(member, replacing=True)

    def _bring_up(self, member: PoolMember, *, replacing: bool = False) -> None:
        try:
            member.start()
        except Exception:  # its next payload tries again (IsolatedDecoder starts lazily)
            log.exception("a circuit decoder child did not start")
        if replacing:
            with self._replaced_lock:
                self._replaced += 1
        if self._closed.is_set():
            member.close()  # the pool closed while this child started: stop it too
        self._idle.put(member)
