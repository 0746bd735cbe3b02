"""Wire constants both ends of the gRPC API and the driver link agree on, defined once.

The circuit-format enum of the stubs against the codec's `CircuitFormat`, the short names the
CLI and SDK use for them, protobuf Timestamps against epoch seconds, and the trailing-metadata
key that carries a refusal's rule id.
"""

from __future__ import annotations

from collections.abc import Mapping

from google.protobuf.timestamp_pb2 import Timestamp

from qtestbed.shared.circuits import CircuitFormat
from qtestbed.v1 import jobs_pb2

# Trailing metadata of a refused call: the policy or rule that refused it.
RULE_ID_METADATA = "qtestbed-rule-id"
# Where gRPC carries a google.rpc.Status with typed details (e.g. RetryInfo: when to retry).
STATUS_DETAILS_METADATA = "grpc-status-details-bin"

# What a sealed lease grant's box is for (authenticated with it, so no other box opens as one).
LEASE_GRANT_SEAL_CONTEXT = b"qtestbed.v1.LeaseGrant"


def lease_grant_seal_context(link_key: bytes) -> bytes:
    """The authenticated context of a lease grant sealed for the connection whose raw CurveZMQ
    link public key is `link_key` (32 bytes): the box is sealed to the connection's own grant
    key, and bound to the key the connection proved, so it opens as nothing else."""
    return LEASE_GRANT_SEAL_CONTEXT + link_key


_FORMAT_TO_PROTO: Mapping[CircuitFormat, jobs_pb2.CircuitFormat.ValueType] = {
    CircuitFormat.OPENQASM2: jobs_pb2.CIRCUIT_FORMAT_OPENQASM2,
    CircuitFormat.OPENQASM3: jobs_pb2.CIRCUIT_FORMAT_OPENQASM3,
    CircuitFormat.QPY: jobs_pb2.CIRCUIT_FORMAT_QPY,
}
_FORMAT_FROM_PROTO = {value: fmt for fmt, value in _FORMAT_TO_PROTO.items()}

# The short names a person types (`qtestbed submit --format qasm3`).
FORMAT_NAMES: Mapping[str, CircuitFormat] = {
    "qasm2": CircuitFormat.OPENQASM2,
    "qasm3": CircuitFormat.OPENQASM3,
    "qpy": CircuitFormat.QPY,
}


def format_to_proto(fmt: CircuitFormat) -> jobs_pb2.CircuitFormat.ValueType:
    return _FORMAT_TO_PROTO[fmt]


def format_from_proto(value: int) -> CircuitFormat | None:
    """The codec's format for a wire value; None for UNSPECIFIED or a value this build lacks."""
    return _FORMAT_FROM_PROTO.get(jobs_pb2.CircuitFormat.ValueType(value))


def stamp(seconds: float) -> Timestamp:
    """Epoch seconds as a protobuf Timestamp, for a field that is always set."""
    out = Timestamp()
    out.FromNanoseconds(int(seconds * 1e9))
    return out


def to_timestamp(seconds: float | None) -> Timestamp | None:
    """Epoch seconds as a protobuf Timestamp (None stays unset)."""
    return None if seconds is None else stamp(seconds)


def seconds(stamp: Timestamp) -> float:
    """A protobuf Timestamp as epoch seconds."""
    return stamp.ToNanoseconds() / 1e9
