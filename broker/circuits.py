"""Circuit validation at the broker edge, and the re-validating loader drivers use.

Validation runs in the broker, so it must stay cheap and must never simulate. Everything a payload
can make a parser allocate is bounded *before* the parser sees it:

- the payload size is checked first, on the raw bytes;
- OpenQASM register declarations are scanned with a regular expression and their widths checked
  against the limits, because the parsers allocate a declared register eagerly (`qreg q[4000000000]`
  is 40 bytes and would take the whole machine's memory, or abort the process from Rust);
- OpenQASM 2 `include` statements only resolve the built-in `qelib1.inc`: with Qiskit's default
  include path a payload could `include "/etc/passwd"` and read the first token back in the error.

QPY is a binary format whose length fields the Rust decoder trusts: a 640-byte payload with one
edited field makes `qiskit.qpy.load` allocate gigabytes or abort the whole process (seen with
Qiskit 2.6). The size limit does not help there, so the broker should decode QPY through
`IsolatedDecoder` (a child process with a memory cap and a deadline). OpenQASM 3 parsing is pure
Python and costs about 20 microseconds a byte (about 5 s at 256 KiB), which is also worth keeping
out of the broker's own threads.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import io
import json
import logging
import multiprocessing
import re
import resource
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Protocol

from qiskit import QuantumCircuit, qasm2, qasm3, qpy
from qiskit.circuit import ControlFlowOp, ForLoopOp, WhileLoopOp
from qiskit.circuit.library import get_standard_gate_name_mapping

from broker.domain import Circuit, CircuitFormat
from broker.errors import BrokerError, ErrorCode

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True, slots=True)
class CircuitLimits:
    """What this broker accepts; `depth` counts loops unrolled and custom gates expanded."""

    max_payload_bytes: int = 256 * 1024
    max_qubits: int = 64
    max_clbits: int = 1024
    max_depth: int = 10_000
    min_shots: int = 1
    max_shots: int = 100_000


class CircuitRejected(BrokerError):
    """A circuit or its shot count that this broker will not run; maps to INVALID_ARGUMENT.

    `field` names the request field at fault: "payload", "circuit", "shots", "format" or "digest".
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(ErrorCode.INVALID_ARGUMENT, message)
        self.field = field


@dataclass(frozen=True, kw_only=True, slots=True)
class CircuitSummary:
    """What validation learns from a parsed circuit; small enough to cross a process boundary."""

    num_qubits: int
    num_clbits: int
    depth: int


class CircuitDecoder(Protocol):
    """Turns a payload into a checked summary, or raises CircuitRejected."""

    def summarize(
        self, fmt: CircuitFormat, payload: bytes, limits: CircuitLimits
    ) -> CircuitSummary: ...


class InProcessDecoder:
    """Parses in the calling process: fine for drivers and tests, unsafe for QPY in the broker."""

    def summarize(
        self, fmt: CircuitFormat, payload: bytes, limits: CircuitLimits
    ) -> CircuitSummary:
        return summarize_circuit(parse_payload(fmt, payload, limits), limits)


DEFAULT_LIMITS = CircuitLimits()
_IN_PROCESS = InProcessDecoder()


def validate_circuit(
    fmt: CircuitFormat,
    payload: bytes,
    shots: int,
    limits: CircuitLimits = DEFAULT_LIMITS,
    *,
    decoder: CircuitDecoder | None = None,
) -> Circuit:
    """Check a submitted circuit and shot count against `limits`; raise CircuitRejected if not."""
    check_shots(shots, limits)
    _check_size(payload, limits)
    summary = (decoder or _IN_PROCESS).summarize(fmt, payload, limits)
    return Circuit(
        format=fmt,
        payload=payload,
        digest=hashlib.sha256(payload).hexdigest(),
        num_qubits=summary.num_qubits,
        depth=summary.depth,
    )


def load_circuit(circuit: Circuit, limits: CircuitLimits = DEFAULT_LIMITS) -> QuantumCircuit:
    """Parse a validated circuit again for execution, re-checking what the broker claimed."""
    actual = hashlib.sha256(circuit.payload).hexdigest()
    if not hmac.compare_digest(actual.encode(), circuit.digest.encode()):
        raise CircuitRejected(
            "digest", "circuit payload does not match its digest; the job must be resubmitted"
        )
    qc, summary = _load(circuit.format, circuit.payload, limits)
    if (summary.num_qubits, summary.depth) != (circuit.num_qubits, circuit.depth):
        raise CircuitRejected(
            "circuit",
            f"circuit has {summary.num_qubits} qubits and depth {summary.depth}, but the job "
            f"says {circuit.num_qubits} and {circuit.depth}; the job must be resubmitted",
        )
    return qc


def load_circuit_payload(
    fmt: CircuitFormat, payload: bytes, limits: CircuitLimits = DEFAULT_LIMITS
) -> QuantumCircuit:
    """Parse a payload for execution, applying every check `validate_circuit` applies."""
    return _load(fmt, payload, limits)[0]


def _load(
    fmt: CircuitFormat, payload: bytes, limits: CircuitLimits
) -> tuple[QuantumCircuit, CircuitSummary]:
    _check_size(payload, limits)
    qc = parse_payload(fmt, payload, limits)
    return qc, summarize_circuit(qc, limits)


def check_shots(shots: int, limits: CircuitLimits) -> None:
    """Reject a shot count outside the limits."""
    if isinstance(shots, bool) or not limits.min_shots <= shots <= limits.max_shots:
        raise CircuitRejected(
            "shots",
            f"shots must be between {limits.min_shots} and {limits.max_shots}, got {shots}",
        )


def _check_size(payload: bytes, limits: CircuitLimits) -> None:
    if len(payload) > limits.max_payload_bytes:
        raise CircuitRejected(
            "payload",
            f"payload is {len(payload)} bytes; this broker accepts at most "
            f"{limits.max_payload_bytes} bytes",
        )
    if not payload:
        raise CircuitRejected("payload", "payload is empty; send an OpenQASM program or QPY file")


# ---------------------------------------------------------------------------------------- parsing


def parse_payload(fmt: CircuitFormat, payload: bytes, limits: CircuitLimits) -> QuantumCircuit:
    """Parse a payload of a known size; every parser failure becomes CircuitRejected."""
    if not isinstance(fmt, CircuitFormat):
        raise CircuitRejected("format", f"unknown circuit format {fmt!r}; map it to CircuitFormat")
    try:
        if fmt is CircuitFormat.QPY:
            return _parse_qpy(payload)
        text = _decode_text(payload)
        _prescan_declarations(text, limits)
        if fmt is CircuitFormat.OPENQASM2:
            return _parse_qasm2(text)
        return _parse_qasm3(text)
    except CircuitRejected:
        raise
    except Exception as exc:
        raise _rejection_for(fmt, exc) from None
    except BaseException as exc:  # a Rust panic surfaces as pyo3's PanicException(BaseException)
        if type(exc).__name__ != "PanicException":
            raise
        raise _rejection_for(fmt, exc) from None


def _decode_text(payload: bytes) -> str:
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CircuitRejected(
            "payload",
            f"OpenQASM source is not valid UTF-8 (bad byte at offset {exc.start}); "
            "send the program as UTF-8 text",
        ) from None


def _parse_qasm2(text: str) -> QuantumCircuit:
    circuit: QuantumCircuit = qasm2.loads(
        text, include_path=(), custom_instructions=qasm2.LEGACY_CUSTOM_INSTRUCTIONS
    )
    return circuit


def _parse_qasm3(text: str) -> QuantumCircuit:
    circuit: QuantumCircuit = qasm3.loads(text)
    return circuit


def _parse_qpy(payload: bytes) -> QuantumCircuit:
    programs: list[Any] = qpy.load(io.BytesIO(payload))
    if len(programs) != 1:
        raise CircuitRejected(
            "circuit", f"QPY payload holds {len(programs)} circuits; send exactly one per job"
        )
    (program,) = programs
    if not isinstance(program, QuantumCircuit):
        raise CircuitRejected("circuit", "QPY payload does not hold a QuantumCircuit")
    return program


_COMMENTS = re.compile(r"//[^\n]*|/\*.*?\*/", re.DOTALL)
_OLD_DECL = re.compile(r"\b([qc])reg\s+[A-Za-z_]\w*\s*\[\s*(\d+)\s*\]")
_NEW_DECL = re.compile(r"\b(qubit|bit)\s*\[\s*(\d+)\s*\]")
_PHYSICAL = re.compile(r"\$(\d+)")


def _prescan_declarations(text: str, limits: CircuitLimits) -> None:
    """Bound declared register widths before a parser allocates them (literal sizes only: the
    OpenQASM 2 grammar allows nothing else and Qiskit's OpenQASM 3 importer rejects constants)."""
    source = _COMMENTS.sub(" ", text)
    qubits = clbits = 0
    for kind, size in (*_OLD_DECL.findall(source), *_NEW_DECL.findall(source)):
        width = int(size) if len(size) <= 18 else 10**18
        if kind in ("q", "qubit"):
            qubits += width
        else:
            clbits += width
    highest_physical = max(
        (int(n) if len(n) <= 18 else 10**18 for n in _PHYSICAL.findall(source)), default=-1
    )
    _check_width(max(qubits, highest_physical + 1), clbits, limits, verb="declares")


def _check_width(qubits: int, clbits: int, limits: CircuitLimits, *, verb: str) -> None:
    if qubits > limits.max_qubits:
        raise CircuitRejected(
            "circuit",
            f"circuit {verb} {qubits} qubits; this broker accepts at most {limits.max_qubits}",
        )
    if clbits > limits.max_clbits:
        raise CircuitRejected(
            "circuit",
            f"circuit {verb} {clbits} classical bits; "
            f"this broker accepts at most {limits.max_clbits}",
        )


# ------------------------------------------------------------------------- parser error messages

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# The parsers count columns from 0; messages count them from 1, as editors do.
_QASM2_POS = re.compile(r"^[^:\n]*:(\d+),(\d+):\s*(.*)$", re.DOTALL)
_QASM3_POS = re.compile(r"^L?(\d+)(?:,|:C)(\d+):\s*(.*)$", re.DOTALL)
_NAMES = {
    CircuitFormat.OPENQASM2: "OpenQASM 2",
    CircuitFormat.OPENQASM3: "OpenQASM 3",
    CircuitFormat.QPY: "QPY",
}


def _rejection_for(fmt: CircuitFormat, exc: BaseException) -> CircuitRejected:
    """Say what a parser objected to, in one short line and without internals."""
    log.debug("circuit parser rejected a payload", exc_info=exc)
    name = _NAMES.get(fmt, str(fmt))
    if fmt is CircuitFormat.QPY:
        return CircuitRejected(
            "circuit",
            f"payload is not a QPY file this broker can read ({_first_line(exc)}); "
            "export it with qiskit.qpy.dump",
        )
    if isinstance(exc, RecursionError):
        return CircuitRejected("circuit", f"{name} program nests too deeply; flatten it")
    message = _first_line(exc)
    position = _position(fmt, message, exc)
    if position is None:
        return CircuitRejected("circuit", f"{name} parse error: {message}")
    line, column, detail = position
    return CircuitRejected(
        "circuit", f"{name} parse error at line {line}, column {column}: {detail or 'syntax error'}"
    )


def _position(fmt: CircuitFormat, message: str, exc: BaseException) -> tuple[int, int, str] | None:
    """(line, 1-based column, what) from a parser's message or, for ANTLR, its cause chain."""
    found = (_QASM2_POS if fmt is CircuitFormat.OPENQASM2 else _QASM3_POS).match(message)
    if found is not None:
        return int(found[1]), int(found[2]) + 1, found[3]
    for cause in _causes(exc):
        token = getattr(cause, "offendingToken", None)
        if token is not None:
            text = "".join(ch for ch in str(token.text)[:40] if ch.isprintable())
            return int(token.line), int(token.column) + 1, f"unexpected {text!r}"
    return None


def _first_line(exc: BaseException) -> str:
    """The first line of an exception message, without terminal escapes, at most 200 characters."""
    text = _ANSI.sub("", str(exc)).strip().strip("\"'").strip()
    line = re.split(r"\n|\\n", text, maxsplit=1)[0].strip()
    line = "".join(ch for ch in line if ch.isprintable())
    return line[:200].rstrip(":") or type(exc).__name__


def _causes(exc: BaseException) -> Iterator[object]:
    seen: set[int] = set()
    pending: list[object] = [exc]
    while pending and len(seen) < 16:
        item = pending.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        if isinstance(item, BaseException):
            pending.extend(
                x for x in (item.__cause__, item.__context__, *item.args) if x is not None
            )


# --------------------------------------------------------------------------------- inspection

# Counted as one layer and never expanded: standard gates, plus library objects whose definition
# would be synthesized on demand (costly, and simulators run them natively).
_ONE_LAYER = frozenset(get_standard_gate_name_mapping()) | {
    "unitary",
    "initialize",
    "state_preparation",
    "isometry",
    "diagonal",
}


def summarize_circuit(qc: QuantumCircuit, limits: CircuitLimits) -> CircuitSummary:
    """Check a parsed circuit against the limits and return what the broker records about it."""
    try:
        return _summarize(qc, limits)
    except CircuitRejected:
        raise
    except Exception as exc:  # hostile structures can trip Qiskit itself (RecursionError, ...)
        log.debug("circuit inspection failed", exc_info=exc)
        raise CircuitRejected(
            "circuit", f"circuit could not be inspected ({type(exc).__name__}); simplify it"
        ) from None


def _summarize(qc: QuantumCircuit, limits: CircuitLimits) -> CircuitSummary:
    _check_width(qc.num_qubits, qc.num_clbits, limits, verb="has")
    if qc.num_parameters:
        names = ", ".join(sorted(p.name for p in qc.parameters)[:3])
        raise CircuitRejected(
            "circuit", f"circuit has unbound parameters ({names}); bind values before submitting"
        )
    if not _has_measurement(qc):
        raise CircuitRejected(
            "circuit",
            "circuit has no measurement, so a run would return no counts; "
            "add measure instructions for the qubits you want read out",
        )
    depth = _DepthCounter().depth(qc)
    if depth > limits.max_depth:
        raise CircuitRejected(
            "circuit", f"circuit depth is {depth}; this broker accepts at most {limits.max_depth}"
        )
    return CircuitSummary(num_qubits=qc.num_qubits, num_clbits=qc.num_clbits, depth=depth)


def _has_measurement(qc: QuantumCircuit) -> bool:
    for instruction in qc.data:
        operation = instruction.operation
        if operation.name == "measure":
            return True
        if isinstance(operation, ControlFlowOp) and any(map(_has_measurement, operation.blocks)):
            return True
    return False


_VISIT_BUDGET = 250_000  # instructions visited, loops and definitions included (about 0.3 s)
_MAX_NESTING = 32


class _DepthCounter:
    """Depth with `for` loops unrolled and user-defined gates expanded, so a short program cannot
    hide a huge run. Each loop body and each gate definition (by name) is walked once, and the
    walk is capped in nesting and in instructions visited, so hostile input costs bounded work."""

    def __init__(self) -> None:
        self._budget = _VISIT_BUDGET
        self._nesting = 0
        self._expanded: dict[tuple[str, int, int], int] = {}

    def depth(self, qc: QuantumCircuit) -> int:
        self._nesting += 1
        if self._nesting > _MAX_NESTING:
            raise CircuitRejected(
                "circuit", f"gate definitions or loops nest more than {_MAX_NESTING} levels deep"
            )
        levels: dict[object, int] = {}
        deepest = 0
        for instruction in qc.data:
            self._budget -= 1
            if self._budget < 0:
                raise CircuitRejected("circuit", "circuit is too large once its gates are expanded")
            wires = (*instruction.qubits, *instruction.clbits)
            weight = self._weight(instruction.operation)
            if weight == 0 or not wires:
                continue
            level = max(levels.get(wire, 0) for wire in wires) + weight
            levels.update(dict.fromkeys(wires, level))
            deepest = max(deepest, level)
        self._nesting -= 1
        return deepest

    def _weight(self, operation: Any) -> int:
        if getattr(operation, "_directive", False):
            return 0
        if isinstance(operation, WhileLoopOp):
            raise CircuitRejected(
                "circuit",
                "while loops are not accepted (their run time is unbounded); use a for loop",
            )
        if isinstance(operation, ForLoopOp):
            return _iterations(operation.params[0]) * self.depth(operation.blocks[0])
        if isinstance(operation, ControlFlowOp):
            return max((self.depth(block) for block in operation.blocks), default=0)
        if operation.name in _ONE_LAYER:
            return 1
        return self._expand(operation)

    def _expand(self, operation: Any) -> int:
        key = (str(operation.name), int(operation.num_qubits), int(operation.num_clbits))
        if key not in self._expanded:
            try:
                definition = operation.definition
            except Exception:
                log.debug("gate definition failed", exc_info=True)
                definition = None
            if definition is None:
                raise CircuitRejected(
                    "circuit",
                    f"gate {key[0]!r} has no definition (opaque); use gates this broker can run",
                )
            self._expanded[key] = max(self.depth(definition), 1)
        return self._expanded[key]


def _iterations(indexset: Any) -> int:
    try:
        return len(indexset)
    except OverflowError:  # range(0, 10**30) has no len()
        return 2**63


# ---------------------------------------------------------------------------------- isolation


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
        request = json.dumps({"format": fmt.value, "limits": dataclasses.asdict(limits)})
        with self._lock:
            reply = self._exchange(self._ensure_child(), request.encode(), payload)
        answer = json.loads(reply)
        if "rejected" in answer:
            raise CircuitRejected(*answer["rejected"])
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
        raise CircuitRejected("payload", f"payload {problem}; simplify or re-export the circuit")

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
    while True:
        try:
            request, payload = json.loads(conn.recv_bytes()), conn.recv_bytes()
        except EOFError:
            return
        try:
            limits = CircuitLimits(**request["limits"])
            summary = _IN_PROCESS.summarize(CircuitFormat(request["format"]), payload, limits)
            answer: dict[str, object] = {"summary": dataclasses.asdict(summary)}
        except CircuitRejected as exc:
            answer = {"rejected": [exc.field, exc.detail]}
        except MemoryError:
            answer = {"rejected": ["payload", "payload exceeded the decoder's memory"]}
        conn.send_bytes(json.dumps(answer).encode())
