"""Decoding in a child process with an address-space cap and a deadline.

QPY's Rust reader trusts its length fields: a 640-byte payload with one edited field allocates
gigabytes or aborts the process (Qiskit 2.6), and no size limit helps. OpenQASM 3 parsing is
pure Python at about 20 microseconds a byte (about 5 s at 256 KiB). A long-lived server should
therefore decode through `IsolatedDecoder`, and call it off its event loop.

The child is also confined before it reads a payload (`qtestbed.shared.circuits.confine`):
no environment, no inherited descriptors but its pipe, and with Landlock no file it may read
beyond Python's libraries (no key file, no facility folder) and none it may write.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing
import os
import resource
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection

from qtestbed.shared.circuits.confine import Confinement, confine
from qtestbed.shared.circuits.decoders import InProcessDecoder
from qtestbed.shared.circuits.model import (
    DEFAULT_LIMITS,
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
    `confinement` says what the child could still reach once it served (see `confine`).
    """

    def __init__(self, *, memory_bytes: int = 1 << 30, timeout_s: float = 10.0) -> None:
        self._memory_bytes = memory_bytes
        self._timeout_s = timeout_s
        self._lock = threading.Lock()
        self._child: multiprocessing.process.BaseProcess | None = None
        self._conn: Connection | None = None
        self.confinement: Confinement | None = None

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

    @property
    def running(self) -> bool:
        """Whether a child is up (False once a payload killed it, until the next start)."""
        return self._conn is not None

    def summarize(
        self,
        fmt: CircuitFormat,
        payload: bytes,
        limits: CircuitLimits,
        *,
        timeout_s: float | None = None,
    ) -> CircuitSummary:
        """Decode `payload` in the child; past `timeout_s` (default: the decoder's) the child
        is killed and the payload rejected."""
        check_size(payload, limits)
        request = json.dumps({"format": fmt.value, "limits": dataclasses.asdict(limits)})
        timeout = self._timeout_s if timeout_s is None else timeout_s
        with self._lock:
            reply = self._exchange(self._ensure_child(), request.encode(), payload, timeout)
        answer = json.loads(reply)
        if "rejected" in answer:
            raise CircuitError(*answer["rejected"])
        return CircuitSummary(**answer["summary"])

    def _exchange(
        self, conn: Connection, request: bytes, payload: bytes, timeout_s: float
    ) -> bytes:
        try:
            conn.send_bytes(request)
            conn.send_bytes(payload)
            if conn.poll(timeout_s):
                return conn.recv_bytes()
            problem = f"took longer than {timeout_s:.3g} s to decode"
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
            target=self._child_target(), args=(child_end, self._memory_bytes), daemon=True
        )
        child.start()
        child_end.close()
        try:
            ready = parent.recv_bytes() if parent.poll(120) else b""
        except (EOFError, OSError):
            ready = b""  # the child died starting
        if not ready.startswith(_READY):
            child.kill()
            raise RuntimeError("isolated circuit decoder did not start")
        self._note(Confinement(**json.loads(ready.removeprefix(_READY))))
        self._child, self._conn = child, parent
        return parent

    def _child_target(self) -> Callable[[Connection, int], None]:
        """The child's entry point: module level, so the spawned interpreter can import it."""
        return _decoder_child

    def _note(self, confinement: Confinement) -> None:
        if confinement != self.confinement:  # once, not at every replacement
            level = logging.INFO if confinement.landlock_abi else logging.WARNING
            log.log(level, "isolated circuit decoder: %s", confinement.describe())
        self.confinement = confinement

    def _stop_child(self) -> None:
        if self._conn is not None:
            self._conn.close()
        if self._child is not None:
            self._child.kill()
            self._child.join()
        self._child = self._conn = None


_READY = b"ready "
# How much lower than its parent's a decoder child's CPU priority is.
NICENESS = 10


def _decoder_child(conn: Connection, memory_bytes: int) -> None:
    """Child side: warm up, cap the address space, confine, then answer until the pipe closes."""
    confinement = prepare_child(conn, memory_bytes)
    conn.send_bytes(_READY + json.dumps(dataclasses.asdict(confinement)).encode())
    _serve(conn)


def prepare_child(conn: Connection, memory_bytes: int) -> Confinement:
    """Everything the child does before its first payload; returns what confinement holds."""
    # Parsing yields the CPU to the process that serves calls: a principal's parser-heavy
    # payloads must not slow down everyone else's requests (issue 15).
    os.nice(NICENESS)
    _warm_up()
    with open("/proc/self/statm", encoding="ascii") as statm:
        current = int(statm.read().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (current + memory_bytes, current + memory_bytes))
    return confine(keep_fds=[conn.fileno()])


_WARM_UP = {
    CircuitFormat.OPENQASM2: b'OPENQASM 2.0;\ninclude "qelib1.inc";\n'
    b"qreg q[2];\ncreg c[2];\ncx q[0],q[1];\nmeasure q -> c;\n",
    CircuitFormat.OPENQASM3: b'OPENQASM 3.0;\ninclude "stdgates.inc";\n'
    b"qubit[2] q;\nbit[2] c;\ncx q[0], q[1];\nc = measure q;\n",
}


def _warm_up() -> None:
    """Parse once in each format before confinement, so that what the parsers load on first
    use (modules, native libraries, the thread pool) is loaded while it still can be."""
    import io

    from qiskit import QuantumCircuit, qpy

    circuit = QuantumCircuit(2)
    circuit.cx(0, 1)
    circuit.measure_all()
    buffer = io.BytesIO()
    qpy.dump(circuit, buffer)
    payloads = {**_WARM_UP, CircuitFormat.QPY: buffer.getvalue()}
    decoder = InProcessDecoder()
    for fmt, payload in payloads.items():
        decoder.summarize(fmt, payload, DEFAULT_LIMITS)


def _serve(conn: Connection) -> None:
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
