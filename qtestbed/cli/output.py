"""The CLI's one JSON printer: every `--json` output goes through `print_json`.

Protobuf messages are printed
- with their proto field names (`queue_position`), which the .proto files fix, rather than the
  lowerCamelCase JSON names;
- with every field at its zero value kept: a queue position of 0, a quota of 0 (no limit) or 0
  shots remaining mean something, and a key that is sometimes missing makes scripts guess;
- with 64-bit integers as JSON numbers, not the strings protobuf's JSON mapping makes of them:
  counts, shot totals, versions and sequence numbers are far below 2**53, and a count that is
  a string is one `jq` cannot add up. Measurement counts are thus `{"00": 498, "11": 502}`.
Timestamps stay RFC 3339 strings and enums their value names, as protobuf prints them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, cast

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

_INT64 = frozenset(
    {
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED64,
    }
)


def print_json(value: object, *, stream: bool = False) -> None:
    """Print `value` (messages, mappings and lists of them, plain JSON values) as JSON.

    `stream` prints one compact line and flushes it, for commands that print a JSON object per
    event as it happens (`watch`, `audit stream`); otherwise the document is indented.
    """
    print(json.dumps(jsonable(value), indent=None if stream else 2), flush=stream)


def show(value: object, *, as_json: bool, text: str) -> None:
    """`value` as JSON when the person asked for --json, else the human-readable `text`."""
    if as_json:
        print_json(value)
    else:
        print(text)


def jsonable(value: object) -> Any:
    """`value` as plain JSON types, messages converted as this module describes."""
    if isinstance(value, Message):
        return message_dict(value)
    if isinstance(value, Mapping):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [jsonable(item) for item in value]  # lists, and repeated fields of a message
    return value


def message_dict(message: Message) -> dict[str, Any]:
    out: dict[str, Any] = MessageToDict(
        message,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
    )
    # The upb (C) descriptor the runtime hands out has the Python descriptor's interface.
    _numbers(cast(Descriptor, message.DESCRIPTOR), out)
    return out


def _numbers(descriptor: Descriptor, body: dict[str, Any]) -> None:
    """Turn the strings MessageToDict made of 64-bit integers back into numbers, in place."""
    for field in descriptor.fields:
        if field.name in body:
            body[field.name] = _field(field, body[field.name])


def _field(field: FieldDescriptor, value: Any) -> Any:
    entry = field.message_type
    if entry is not None and entry.GetOptions().map_entry:
        item = entry.fields_by_name["value"]
        return {key: _single(item, v) for key, v in value.items()}
    if field.is_repeated:
        return [_single(field, v) for v in value]
    return _single(field, value)


def _single(field: FieldDescriptor, value: Any) -> Any:
    if field.type in _INT64:
        return int(value)
    kind = field.message_type
    # Well-known types (Timestamp) print as strings; only this project's messages nest.
    if kind is not None and not kind.file.name.startswith("google/protobuf/"):
        _numbers(kind, value)
    return value
