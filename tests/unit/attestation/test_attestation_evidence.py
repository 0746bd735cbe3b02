from __future__ import annotations

import json
from typing import Any

import pytest

from attestation.dsse import verify_envelope
from attestation.evidence import (
    EVIDENCE_PAYLOAD_TYPE,
    EvidenceClaims,
    EvidenceError,
    Measurements,
    decode_claims,
    encode_claims,
    make_evidence,
)
from attestation.keys import SigningKey

CLAIMS = EvidenceClaims(
    device_id="qpu-1",
    nonce=bytes(range(32)),
    issued_at=1_700_000_000.25,
    boot_epoch="boot-7",
    counter=3,
    measurements=Measurements(
        firmware="fw-1.2",
        control_software="ctl-4",
        driver_build="drv-abc",
        calibration_digest="c" * 64,
        num_qubits=5,
        two_qubit_error=0.01,
    ),
)


def test_encoding_is_canonical() -> None:
    data = encode_claims(CLAIMS)
    raw = json.loads(data)
    assert data == json.dumps(raw, sort_keys=True, separators=(",", ":")).encode()
    assert raw["nonce"] == bytes(range(32)).hex()
    assert raw["measurements"]["num_qubits"] == 5


def test_round_trip() -> None:
    assert decode_claims(encode_claims(CLAIMS)) == CLAIMS


def test_two_qubit_error_may_be_unknown() -> None:
    m = Measurements(**{**CLAIMS.measurements.as_dict(), "two_qubit_error": None})
    claims = EvidenceClaims(**{**_fields(CLAIMS), "measurements": m})
    assert decode_claims(encode_claims(claims)).measurements.two_qubit_error is None


def _fields(claims: EvidenceClaims) -> dict[str, Any]:
    return {name: getattr(claims, name) for name in EvidenceClaims.__dataclass_fields__}


def _mutated(path: tuple[str, ...], value: object) -> bytes:
    raw = json.loads(encode_claims(CLAIMS))
    target = raw
    for part in path[:-1]:
        target = target[part]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return json.dumps(raw).encode()


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("device_id",), _DELETE, "missing field 'device_id'"),
        (("device_id",), "", "'device_id' must be a non-empty string"),
        (("nonce",), "abc", "'nonce' must be a lower-case hex"),
        (("nonce",), "AB" * 16, "'nonce' must be a lower-case hex"),
        (("nonce",), "ab cd", "'nonce' must be a lower-case hex"),
        (("nonce",), "ab" * 7, "'nonce' must be 8 to 64 bytes"),
        (("nonce",), "ab" * 65, "'nonce' must be 8 to 64 bytes"),
        (("issued_at",), "yesterday", "'issued_at' must be a finite number"),
        (("issued_at",), True, "'issued_at' must be a finite number"),
        (("issued_at",), 10**400, "'issued_at' must be a finite number"),
        (("measurements", "two_qubit_error"), -(10**400), "'two_qubit_error' must be a finite"),
        (("boot_epoch",), 7, "'boot_epoch' must be a non-empty string"),
        (("counter",), -1, "'counter' must be an integer >= 0"),
        (("counter",), 1.5, "'counter' must be an integer >= 0"),
        (("counter",), True, "'counter' must be an integer >= 0"),
        (("measurements",), [], "measurements: expected a JSON object"),
        (("measurements", "firmware"), _DELETE, "missing field 'firmware'"),
        (("measurements", "num_qubits"), "5", "'num_qubits' must be an integer"),
        (("measurements", "two_qubit_error"), 2.0, "'two_qubit_error' must be between 0 and 1"),
        (("measurements", "extra"), 1, "unexpected field 'extra'"),
        (("extra",), 1, "unexpected field 'extra'"),
    ],
)
def test_decode_names_the_bad_field(path: tuple[str, ...], value: object, message: str) -> None:
    with pytest.raises(EvidenceError, match=message):
        decode_claims(_mutated(path, value))


@pytest.mark.parametrize("size", [8, 64])
def test_nonce_sizes_at_the_eat_limits_decode(size: int) -> None:
    assert decode_claims(_mutated(("nonce",), "ab" * size)).nonce == b"\xab" * size


@pytest.mark.parametrize("data", [b"not json", b"[]", b'{"counter": Infinity}'])
def test_decode_refuses_non_objects(data: bytes) -> None:
    with pytest.raises(EvidenceError, match="malformed evidence"):
        decode_claims(data)


def test_make_evidence_signs_claims(device_key: SigningKey) -> None:
    env = make_evidence(CLAIMS, device_key)
    assert env.payload_type == EVIDENCE_PAYLOAD_TYPE
    assert decode_claims(env.payload) == CLAIMS
    assert verify_envelope(env, device_key.public_key)
