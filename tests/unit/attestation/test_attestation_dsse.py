from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import replace

import pytest

from attestation.dsse import (
    MAX_ENVELOPE_BYTES,
    MAX_SIGNATURES,
    Envelope,
    EnvelopeError,
    Signature,
    pae,
    sign_envelope,
    verify_envelope,
)
from attestation.keys import SigningKey

TYPE = "application/vnd.example+json"


def test_pae_matches_dsse_spec_example() -> None:
    assert (
        pae("http://example.com/HelloWorld", b"hello world")
        == b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_pae_lengths_are_in_bytes_not_characters() -> None:
    assert pae("t\u00e9", b"") == b"DSSEv1 3 t\xc3\xa9 0 "


def test_envelope_round_trip_verifies(device_key: SigningKey) -> None:
    env = sign_envelope(TYPE, b'{"a":1}', device_key)
    again = Envelope.from_json(env.to_json())
    assert again == env
    assert verify_envelope(again, device_key.public_key)
    assert again.signatures[0].keyid == device_key.public_key.key_id


def test_json_uses_standard_dsse_fields(device_key: SigningKey) -> None:
    env = sign_envelope(TYPE, b"\x00\xffpayload", device_key)
    raw = json.loads(env.to_json())
    assert set(raw) == {"payloadType", "payload", "signatures"}
    assert raw["payloadType"] == TYPE
    assert base64.b64decode(raw["payload"]) == b"\x00\xffpayload"
    [sig] = raw["signatures"]
    assert sig["keyid"] == device_key.public_key.key_id
    assert base64.b64decode(sig["sig"]) == env.signatures[0].sig


def test_flipped_payload_byte_fails(device_key: SigningKey) -> None:
    env = sign_envelope(TYPE, b"payload", device_key)
    tampered = replace(env, payload=b"pbyload")
    assert not verify_envelope(tampered, device_key.public_key)


def test_changed_payload_type_fails(device_key: SigningKey) -> None:
    env = sign_envelope(TYPE, b"payload", device_key)
    assert not verify_envelope(replace(env, payload_type=TYPE + "x"), device_key.public_key)


def test_wrong_key_fails(device_key: SigningKey, other_key: SigningKey) -> None:
    env = sign_envelope(TYPE, b"payload", device_key)
    assert not verify_envelope(env, other_key.public_key)


def test_signature_filed_under_another_keyid_fails(
    device_key: SigningKey, other_key: SigningKey
) -> None:
    env = sign_envelope(TYPE, b"payload", device_key)
    relabelled = Signature(keyid=other_key.public_key.key_id, sig=env.signatures[0].sig)
    assert not verify_envelope(replace(env, signatures=(relabelled,)), device_key.public_key)


def test_signature_over_raw_payload_is_not_accepted(device_key: SigningKey) -> None:
    raw_sig = Signature(keyid=device_key.public_key.key_id, sig=device_key.sign(b"payload"))
    env = Envelope(payload_type=TYPE, payload=b"payload", signatures=(raw_sig,))
    assert not verify_envelope(env, device_key.public_key)


def test_any_matching_signature_suffices(device_key: SigningKey, other_key: SigningKey) -> None:
    first = sign_envelope(TYPE, b"payload", other_key).signatures[0]
    second = sign_envelope(TYPE, b"payload", device_key).signatures[0]
    env = Envelope(payload_type=TYPE, payload=b"payload", signatures=(first, second))
    assert verify_envelope(Envelope.from_json(env.to_json()), device_key.public_key)


def test_url_safe_base64_is_accepted(device_key: SigningKey) -> None:
    env = sign_envelope(TYPE, b"\xfb\xff\xfe", device_key)
    raw = json.loads(env.to_json())
    raw["payload"] = base64.urlsafe_b64encode(env.payload).decode()
    assert "-" in raw["payload"] or "_" in raw["payload"]
    assert Envelope.from_json(json.dumps(raw).encode()).payload == env.payload


def test_digest_is_sha256_of_json(device_key: SigningKey, other_key: SigningKey) -> None:
    env = sign_envelope(TYPE, b"payload", device_key)
    assert env.digest() == hashlib.sha256(env.to_json()).hexdigest()
    assert env.digest() != sign_envelope(TYPE, b"payload", other_key).digest()


GOOD = {
    "payloadType": TYPE,
    "payload": "cGF5bG9hZA==",
    "signatures": [{"keyid": "k", "sig": "AA=="}],
}


def _with(**changes: object) -> bytes:
    raw: dict[str, object] = {**GOOD, **changes}
    return json.dumps({k: v for k, v in raw.items() if v is not None}).encode()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"{not json", "not JSON"),
        (b"\xff\xfe", "not UTF-8"),
        (b"[]", "expected a JSON object"),
        (_with(payloadType=None), "payloadType"),
        (_with(payloadType=""), "payloadType"),
        (_with(payload=None), "'payload' must be a base64 string"),
        (_with(payload="!!!"), "'payload' is not valid base64"),
        (_with(signatures=[]), "'signatures' must be a non-empty list"),
        (_with(signatures="x"), "'signatures' must be a non-empty list"),
        (_with(signatures=["x"]), r"signatures\[0\] must be an object"),
        (_with(signatures=[{"keyid": 3, "sig": "AA=="}]), r"signatures\[0\]\.keyid"),
        (_with(signatures=[{"keyid": "k"}]), r"signatures\[0\]\.sig"),
        (b'{"payloadType":"a","payloadType":"b"}', "duplicate key 'payloadType'"),
        (b'{"payloadType":NaN}', "non-finite"),
        (b'{"payloadType":"\\ud800","payload":"","signatures":[{"sig":""}]}', "not valid Unicode"),
        (_with(signatures=[{"keyid": "k", "sig": "AA=="}] * (MAX_SIGNATURES + 1)), "more than"),
        (b"[" * 100_000, "nested too deeply"),
        (b'{"payloadType":' + b"1" * 5000 + b"}", "not JSON"),
    ],
)
def test_malformed_envelopes_are_refused_with_a_reason(data: bytes, message: str) -> None:
    with pytest.raises(EnvelopeError, match=message):
        Envelope.from_json(data)


def test_valid_template_parses() -> None:
    # Guards the table above: each case fails for its own change, not for a broken template.
    assert Envelope.from_json(_with()).payload == b"payload"


def test_oversized_envelope_is_refused_before_parsing() -> None:
    with pytest.raises(EnvelopeError, match="bytes, over"):
        Envelope.from_json(b" " * (MAX_ENVELOPE_BYTES + 1))
