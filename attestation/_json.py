"""Strict and canonical JSON for signed payloads.

Signed bytes must have one reading only: duplicate keys, NaN and Infinity are refused on input
because different parsers resolve them differently, and output is sorted and compact so the same
claims always produce the same bytes (and the same digest).
"""

from __future__ import annotations

import json
import math
from typing import Any


class StrictJSONError(ValueError):
    """The bytes are not strict JSON."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise StrictJSONError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _no_constants(name: str) -> Any:
    raise StrictJSONError(f"non-finite number {name} is not allowed")


def _finite_float(text: str) -> float:
    # `1e400` is valid JSON that Python reads as inf: as non-finite as the Infinity constant,
    # and canonical_dumps could not write it back (found by fuzz/audit_inclusion.py).
    value = float(text)
    if not math.isfinite(value):
        raise StrictJSONError(f"number {text[:40]} is out of range")
    return value


def strict_loads(data: bytes) -> Any:
    """Parse UTF-8 JSON, refusing duplicate keys and non-finite numbers."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StrictJSONError(f"not UTF-8: {exc}") from exc
    try:
        return json.loads(
            text,
            object_pairs_hook=_no_duplicates,
            parse_constant=_no_constants,
            parse_float=_finite_float,
        )
    except StrictJSONError:
        raise
    except RecursionError as exc:
        raise StrictJSONError("not JSON we accept: nested too deeply") from exc
    except ValueError as exc:
        # JSONDecodeError, and also integers over Python's 4,300-digit conversion limit.
        raise StrictJSONError(f"not JSON: {exc}") from exc


def canonical_dumps(value: Any) -> bytes:
    """Sorted keys, no whitespace, ASCII only; refuses NaN and Infinity."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("ascii")


def is_number(value: object) -> bool:
    """A finite JSON number; bool is excluded although Python treats it as an int."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer too large for a float
        return False


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def object_with(raw: object, fields: frozenset[str], where: str) -> dict[str, Any]:
    """`raw` as a JSON object having exactly `fields`; unknown fields are refused, not ignored."""
    if not isinstance(raw, dict):
        raise StrictJSONError(f"{where}: expected a JSON object")
    missing = sorted(fields - raw.keys())
    if missing:
        raise StrictJSONError(f"{where}: missing field {missing[0]!r}")
    extra = sorted(raw.keys() - fields)
    if extra:
        raise StrictJSONError(f"{where}: unexpected field {extra[0]!r}")
    return raw


def get_str(raw: dict[str, Any], name: str) -> str:
    value = raw[name]
    if not isinstance(value, str) or not value:
        raise StrictJSONError(f"field {name!r} must be a non-empty string")
    return value


def get_int(raw: dict[str, Any], name: str, *, minimum: int = 0) -> int:
    value = raw[name]
    if not is_int(value) or value < minimum:
        raise StrictJSONError(f"field {name!r} must be an integer >= {minimum}")
    return int(value)


def get_number(raw: dict[str, Any], name: str) -> float:
    value = raw[name]
    if not is_number(value):
        raise StrictJSONError(f"field {name!r} must be a finite number")
    return float(value)


def get_hex(raw: dict[str, Any], name: str, *, min_bytes: int, max_bytes: int) -> bytes:
    value = raw[name]
    # bytes.fromhex alone would also accept spaces and upper case: two spellings, one value.
    if not isinstance(value, str) or len(value) % 2 or not set(value) <= _HEX_DIGITS:
        raise StrictJSONError(f"field {name!r} must be a lower-case hex string")
    decoded = bytes.fromhex(value)
    if not min_bytes <= len(decoded) <= max_bytes:
        raise StrictJSONError(f"field {name!r} must be {min_bytes} to {max_bytes} bytes")
    return decoded


_HEX_DIGITS = frozenset("0123456789abcdef")
