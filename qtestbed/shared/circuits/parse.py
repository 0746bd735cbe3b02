"""Parsing a payload of a known size, bounding what the parsers may allocate first.

- register widths, physical qubit numbers and range bounds must be plain decimal literals within
  the limits (a regular-expression scan): the parsers allocate a declared register eagerly, so
  `qreg q[4000000000]` (40 bytes) takes all memory or aborts the process from Rust, and Qiskit's
  OpenQASM 3 importer evaluates `qubit[1000*1000]` and materializes `for` ranges past 2**63;
- OpenQASM 2 `include` resolves only the built-in `qelib1.inc`: with Qiskit's default include
  path, `include "/etc/passwd"` reads a local file and echoes its first token in the error;
- every parser failure, a Rust panic included, becomes one short CircuitError without internals.

That scan cannot make the parsers safe in general: QPY's Rust reader trusts its length fields
(a 640-byte payload with one edited field allocates gigabytes or aborts the process), and
OpenQASM 3 parsing costs about 20 microseconds a byte. See `qtestbed.shared.circuits.isolated`.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator
from typing import Any

from qiskit import QuantumCircuit, qasm2, qasm3, qpy

from qtestbed.shared.circuits.model import (
    CircuitError,
    CircuitFormat,
    CircuitLimits,
    check_width,
    is_rust_panic,
)

log = logging.getLogger(__name__)


def parse_payload(fmt: CircuitFormat, payload: bytes, limits: CircuitLimits) -> QuantumCircuit:
    """Parse a payload of a known size; every parser failure becomes CircuitError.

    The caller checks the payload size first (`check_size`); this bounds declarations only.
    """
    if not isinstance(fmt, CircuitFormat):
        raise CircuitError("format", f"unknown circuit format {fmt!r}; map it to CircuitFormat")
    try:
        if fmt is CircuitFormat.QPY:
            return _parse_qpy(payload)
        text = _decode_text(payload)
        _prescan_declarations(text, limits)
        if fmt is CircuitFormat.OPENQASM2:
            return _parse_qasm2(text)
        return _parse_qasm3(text)
    except CircuitError:
        raise
    except Exception as exc:
        raise _rejection_for(fmt, exc) from None
    except BaseException as exc:
        if not is_rust_panic(exc):
            raise
        raise _rejection_for(fmt, exc) from None


def _decode_text(payload: bytes) -> str:
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CircuitError(
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
        raise CircuitError(
            "circuit", f"QPY payload holds {len(programs)} circuits; send exactly one per job"
        )
    (program,) = programs
    if not isinstance(program, QuantumCircuit):
        raise CircuitError("circuit", "QPY payload does not hold a QuantumCircuit")
    return program


_COMMENTS = re.compile(r"//[^\n]*|/\*.*?\*/", re.DOTALL)
_DECLARATION = re.compile(
    r"\b(?:(qubit|bit)\s*\[([^\]]*)\]|([qc])reg\s+[A-Za-z_]\w*\s*\[([^\]]*)\])"
)
_RANGE = re.compile(r"\[([^\[\]]*:[^\[\]]*)\]")
_PHYSICAL = re.compile(r"\$(\d+)")
_DECIMAL = re.compile(r"\s*-?\d{1,18}\s*")


def _prescan_declarations(text: str, limits: CircuitLimits) -> None:
    """Bound what the parsers would allocate before they run: register widths, physical qubit
    numbers and range bounds must be plain decimal literals (Qiskit's OpenQASM 3 importer
    evaluates `qubit[1000*1000]` and materializes `[0:10**19]` ranges until memory runs out)."""
    source = _COMMENTS.sub(" ", text)
    qubits = clbits = 0
    for new_kind, new_size, old_kind, old_size in _DECLARATION.findall(source):
        width = _literal(new_size or old_size, "register sizes")
        if (new_kind or old_kind) in ("qubit", "q"):
            qubits += width
        else:
            clbits += width
    for bounds in _RANGE.findall(source):
        for part in bounds.split(":"):
            if part.strip():
                _literal(part, "range bounds")
    highest_physical = max(
        (int(n) if len(n) <= 18 else 10**18 for n in _PHYSICAL.findall(source)), default=-1
    )
    check_width(max(qubits, highest_physical + 1), clbits, limits, verb="declares")


def _literal(text: str, what: str) -> int:
    if _DECIMAL.fullmatch(text) is None:
        shown = " ".join(text.split())[:40]
        raise CircuitError(
            "circuit", f"{what} must be plain decimal numbers (up to 18 digits), not [{shown}]"
        )
    return int(text)


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


def _rejection_for(fmt: CircuitFormat, exc: BaseException) -> CircuitError:
    """Say what a parser objected to, in one short line and without internals."""
    log.debug("circuit parser rejected a payload", exc_info=exc)
    name = _NAMES.get(fmt, str(fmt))
    if fmt is CircuitFormat.QPY:
        return CircuitError(
            "circuit",
            f"payload is not a QPY file this broker can read ({_first_line(exc)}); "
            "export it with qiskit.qpy.dump",
        )
    if isinstance(exc, RecursionError):
        return CircuitError("circuit", f"{name} program nests too deeply; flatten it")
    message = _first_line(exc)
    position = _position(fmt, message, exc)
    if position is None:
        return CircuitError("circuit", f"{name} parse error: {message}")
    line, column, detail = position
    return CircuitError(
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
