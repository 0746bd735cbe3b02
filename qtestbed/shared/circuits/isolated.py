"""Decoding in a child process with an address-space cap and a deadline.

QPY's Rust reader trusts its length fields: a 640-byte payload with one edited field allocates
gigabytes or aborts the process (Qiskit 2.6), and no size limit helps. OpenQASM 3 parsing is
pure Python at about 20 microseconds a byte (about 5 s at 256 KiB). A long-lived server should
therefore decode through `IsolatedDecoder`, and call it off its event loop.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing
import resource
import threading
from multiprocessing.connection import Connection

from qtestbed.shared.circuits.decoders import InProcessDecoder
from qtestbed.shared.circuits.model import (
    CircuitError,
    CircuitFormat,
    CircuitLimits,
    CircuitSummary,
    check_size,
)

log = logging.getLogger(__name__)


class IsolatedDecoder:
    """Decodes payloads in one child process with an address-space cap and a deadline.

    A payload that crashes the child, exhausts its memory or runs past the deadline is rejected
    and the child is replaced; the calling process never runs the parsers. Calls are serialized.
    Linux only (the cap is RLIMIT_AS over the child's size after importing Qiskit).
    """

    def __init__(self, *, memory_bytes: int = 1 << 30, timeout_s: float = 10.0) -> None:
        self._memory_bytes = memory_bytes
        self._timeout_s = timeout_s
        self._lock = threading.Lock()
        self._child: multiprocessing.process.BaseProcess | None = None
        self._conn: Connection | None = None

    def __enter__(self) -> IsolatedDecoder:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start(self) -> None:
        """Start the child now rather than on the first call (it takes a second or two)."""
        with self._lock:
            self._ensure_child()

    def close(self) -> None:
        with self._lock:
            self._stop_child()

    def summarize(
        self, fmt: CircuitFormat, payload: bytes, limits: CircuitLimits
    ) -> CircuitSummary:
        check_size(payload, limits)
        request = json.dumps({"format": fmt.value, "limits": dataclasses.asdict(limits)})
        with self._lock:
            reply = self._exchange(self._ensure_child(), request.encode(), payload)
        answer = json.loads(reply)
        if "rejected" in answer:
            raise CircuitError(*answer["rejected"])
        return CircuitSummary(**answer["summary"])

    def _exchange(self, conn: Connection, request: bytes, payload: bytes) -> bytes:
        try:
            conn.send_bytes(request)
            conn.send_bytes(payload)
            if conn.poll(self._timeout_s):
                return conn.recv_bytes()
            problem = f"took longer than {self._timeout_s:g} s to decode"
        except (EOFError, OSError):
            problem = "exceeded the decoder's memory or crashed it"
        self._stop_child()
        log.warning("isolated circuit decoder lost its child: payload %s", problem)
        raise CircuitError("payload", f"payload {problem}; simplify or re-export the circuit")

    def _ensure_child(self) -> Connection:
        if self._conn is not None and self._child is not None and self._child.is_alive():
            return self._conn
        self._stop_child()
        context = multiprocessing.get_context("spawn")
        parent, child_end = context.Pipe()
        child = context.Process(
            target=_decoder_child, args=(child_end, self._memory_bytes), daemon=True
        )
        child.start()
        child_end.close()
        if not parent.poll(120) or parent.recv_bytes() != b"ready":
            child.kill()
            raise RuntimeError("isolated circuit decoder did not start")
        self._child, self._conn = child, parent
        return parent

    def _stop_child(self) -> None:
        if self._conn is not None:
            self._conn.close()
        if self._child is not None:
            self._child.kill()
            self._child.join()
        self._child = self._conn = None


def _decoder_child(conn: Connection, memory_bytes: int) -> None:
    """Child side: cap the address space, then answer requests until the pipe closes."""
    with open("/proc/self/statm", encoding="ascii") as statm:
        current = int(statm.read().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (current + memory_bytes, current + memory_bytes))
    conn.send_bytes(b"ready")
    decoder = InProcessDecoder()
    while True:
        try:
            request, payload = json.loads(conn.recv_bytes()), conn.recv_bytes()
        except EOFError:
            return
        try:
            limits = CircuitLimits(**request["limits"])
            summary = decoder.summarize(CircuitFormat(request["format"]), payload, limits)
            answer: dict[str, object] = {"summary": dataclasses.asdict(summary)}
        except CircuitError as exc:
            answer = {"rejected": [exc.field, str(exc)]}
        except MemoryError:
            answer = {"rejected": ["payload", "payload exceeded the decoder's memory"]}
        conn.send_bytes(json.dumps(answer).encode())
