"""Hostile input through `appraise`: it never raises, never affirms, never holds the result
against the device and never burns the nonce of the device it names."""

from __future__ import annotations

import base64
import dataclasses
import json
import random
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from attestation.appraisal import AttestationResult, AttestationStatus, ReasonCode
from attestation.dsse import MAX_ENVELOPE_BYTES, sign_envelope
from attestation.evidence import EVIDENCE_PAYLOAD_TYPE, encode_claims
from attestation.keys import SigningKey
from attestation.nonces import NonceIssuer
from tests.unit.attestation.support import (
    DEVICE,
    NOW,
    Identity,
    make_claims,
    run_appraisal,
    sign_evidence,
)

R = ReasonCode
RNG_SEED = 20_250_601


@pytest.fixture
def nonces() -> NonceIssuer:
    return NonceIssuer(ttl_seconds=10)


def _refused(result: AttestationResult, codes: set[ReasonCode]) -> None:
    assert result.status is AttestationStatus.CONTRAINDICATED
    assert not result.affirming(NOW)
    assert not result.authenticated
    assert result.claims is None
    assert result.codes == codes, result.reasons
    assert len(result.evidence_digest) == 64


def test_random_bytes(nonces: NonceIssuer, genuine: Identity) -> None:
    nonce = nonces.issue(DEVICE, NOW - 2)
    rng = random.Random(RNG_SEED)
    for _ in range(300):
        data = rng.randbytes(rng.choice([0, 1, 2, 7, 64, 512, 4096]))
        _refused(run_appraisal(data, nonces, genuine), {R.MALFORMED_EVIDENCE})
    assert nonces.check(DEVICE, nonce, NOW) is None


def test_every_truncation_of_valid_evidence(
    device_key: SigningKey, nonces: NonceIssuer, genuine: Identity
) -> None:
    nonce = nonces.issue(DEVICE, NOW - 2)
    evidence = sign_evidence(device_key, nonces, nonce=nonce)
    for end in range(len(evidence)):
        _refused(run_appraisal(evidence[:end], nonces, genuine), {R.MALFORMED_EVIDENCE})
    assert run_appraisal(evidence, nonces, genuine).affirming(NOW)  # the nonce survived it all


def test_random_byte_changes_to_valid_evidence(
    device_key: SigningKey, nonces: NonceIssuer, genuine: Identity
) -> None:
    rng = random.Random(RNG_SEED)
    evidence = sign_evidence(device_key, nonces)
    for _ in range(300):
        changed = bytearray(evidence)
        for _ in range(rng.randint(1, 3)):
            changed[rng.randrange(len(changed))] = rng.randrange(256)
        result = run_appraisal(bytes(changed), nonces, genuine)
        # A change to base64 padding bits can leave the decoded bytes (and signature) intact.
        if result.authenticated:
            assert result.claims is not None
        else:
            assert result.claims is None
            assert not result.affirming(NOW)


def _huge_inputs() -> Iterator[bytes]:
    yield b'{"payloadType":"' + b"a" * MAX_ENVELOPE_BYTES + b'"}'
    yield b" " * (MAX_ENVELOPE_BYTES - 1) + b"{"
    yield b"[" * (MAX_ENVELOPE_BYTES - 1)
    yield b'{"a":' * 200_000
    yield b'{"payloadType":' + b"9" * 100_000 + b"}"
    yield b'{"payloadType":"x","payload":"","signatures":[' + b"{}," * 300_000 + b"{}]}"


def test_huge_json(nonces: NonceIssuer, genuine: Identity) -> None:
    for data in _huge_inputs():
        _refused(run_appraisal(data, nonces, genuine), {R.MALFORMED_EVIDENCE})


def test_many_signatures_under_the_device_key_id_are_refused_unverified(
    device_key: SigningKey, nonces: NonceIssuer, genuine: Identity
) -> None:
    envelope = json.loads(sign_evidence(device_key, nonces))
    envelope["signatures"] = envelope["signatures"] * 1_000  # ~150 kB: under the size cap
    result = run_appraisal(json.dumps(envelope).encode(), nonces, genuine)
    _refused(result, {R.MALFORMED_EVIDENCE})
    assert "signatures" in result.reasons[0].detail


GOOD_ENVELOPE: dict[str, Any] = {
    "payloadType": EVIDENCE_PAYLOAD_TYPE,
    "payload": base64.b64encode(b"{}").decode(),
    "signatures": [{"keyid": "k", "sig": "AA=="}],
}
WRONG_TYPES: list[object] = [None, True, 0, -1, 1.5, 10**400, "", "x", [], [1], {}, {"a": 1}]


@pytest.mark.parametrize("field", ["payloadType", "payload", "signatures"])
def test_wrong_types_in_the_envelope(field: str, nonces: NonceIssuer, genuine: Identity) -> None:
    for value in WRONG_TYPES:
        raw = {**GOOD_ENVELOPE, field: value}
        result = run_appraisal(json.dumps(raw).encode(), nonces, genuine)
        assert result.status is AttestationStatus.CONTRAINDICATED, (field, value)
        assert not result.authenticated
        assert result.codes <= {R.MALFORMED_EVIDENCE, R.PAYLOAD_TYPE_WRONG, R.SIGNATURE_INVALID}


@pytest.mark.parametrize("part", ["keyid", "sig"])
def test_wrong_types_in_a_signature(part: str, nonces: NonceIssuer, genuine: Identity) -> None:
    for value in WRONG_TYPES:
        signature = {"keyid": "k", "sig": "AA==", part: value}
        raw = {**GOOD_ENVELOPE, "signatures": [signature]}
        result = run_appraisal(json.dumps(raw).encode(), nonces, genuine)
        assert result.status is AttestationStatus.CONTRAINDICATED
        assert result.codes <= {R.MALFORMED_EVIDENCE, R.SIGNATURE_INVALID}


def _claim_paths() -> Sequence[tuple[str, ...]]:
    claims = json.loads(encode_claims(make_claims(b"\x01" * 32)))
    top = [(name,) for name in claims if name != "measurements"]
    return top + [("measurements", name) for name in claims["measurements"]] + [("measurements",)]


def _signed_with(path: tuple[str, ...], value: object, nonce: bytes, key: SigningKey) -> bytes:
    raw = json.loads(encode_claims(make_claims(nonce)))
    target = raw
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return sign_envelope(EVIDENCE_PAYLOAD_TYPE, json.dumps(raw).encode(), key).to_json()


NEVER_VALID: list[object] = [True, [], [1], {}, {"a": 1}]
SOMETIMES_VALID: list[object] = [None, 0, -1, 1.5, 10**400, -(10**400), "", "x", "ab" * 8]


@pytest.mark.parametrize("path", _claim_paths(), ids="/".join)
def test_wrong_types_in_claims_the_device_signed(
    path: tuple[str, ...], device_key: SigningKey, nonces: NonceIssuer, genuine: Identity
) -> None:
    wrong = NEVER_VALID + ([] if path[-1] == "two_qubit_error" else [None])
    for value in wrong:
        nonce = nonces.issue(DEVICE, NOW - 2)
        result = run_appraisal(_signed_with(path, value, nonce, device_key), nonces, genuine)
        _refused(result, {R.MALFORMED_EVIDENCE})
        assert nonces.check(DEVICE, nonce, NOW) is None  # undecodable: nothing to consume


@pytest.mark.parametrize("path", _claim_paths(), ids="/".join)
def test_odd_values_in_claims_the_device_signed(
    path: tuple[str, ...], device_key: SigningKey, nonces: NonceIssuer, genuine: Identity
) -> None:
    for value in SOMETIMES_VALID:
        nonce = nonces.issue(DEVICE, NOW - 2)
        result = run_appraisal(_signed_with(path, value, nonce, device_key), nonces, genuine)
        if R.MALFORMED_EVIDENCE in result.codes:
            _refused(result, {R.MALFORMED_EVIDENCE})
        elif path == ("nonce",):  # decoded, but answers no nonce we issued
            assert R.NONCE_UNKNOWN in result.codes
            assert not result.authenticated
        else:  # decoded: signed by the device in answer to this nonce
            assert result.authenticated, (value, result.reasons)
            assert result.claims is not None


def test_lone_surrogates_and_control_characters(
    device_key: SigningKey, nonces: NonceIssuer, genuine: Identity
) -> None:
    nasty = '{"payloadType":"\\ud800","payload":"","signatures":[{"keyid":"\\udfff","sig":""}]}'
    _refused(run_appraisal(nasty.encode(), nonces, genuine), {R.MALFORMED_EVIDENCE})
    claims = make_claims(nonces.issue(DEVICE, NOW - 2), device_id="\ud800\x00", boot_epoch="\x1b")
    payload = json.dumps(dataclasses.asdict(claims), default=bytes.hex).encode()
    envelope = sign_envelope(EVIDENCE_PAYLOAD_TYPE, payload, device_key)
    result = run_appraisal(envelope.to_json(), nonces, genuine)
    assert result.status is AttestationStatus.CONTRAINDICATED
    assert all(isinstance(r.detail, str) for r in result.reasons)


@pytest.mark.parametrize(
    "chain",
    [
        b"",
        b"\x00" * 100,
        b"-----BEGIN CERTIFICATE-----\n",
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        bytes(random.Random(RNG_SEED).randbytes(5000)),
        b"-----BEGIN CERTIFICATE-----\n" + b"QUFB" * 100_000 + b"\n-----END CERTIFICATE-----\n",
    ],
)
def test_hostile_certificate_chains(
    chain: bytes, device_key: SigningKey, nonces: NonceIssuer, genuine: Identity
) -> None:
    nonce = nonces.issue(DEVICE, NOW - 2)
    evidence = sign_evidence(device_key, nonces, nonce=nonce)
    result = run_appraisal(evidence, nonces, dataclasses.replace(genuine, chain=chain))
    _refused(result, {R.CERT_UNTRUSTED, R.SIGNATURE_INVALID})
    assert nonces.check(DEVICE, nonce, NOW) is None


def test_truncated_certificate_chain(
    device_key: SigningKey, nonces: NonceIssuer, genuine: Identity
) -> None:
    evidence = sign_evidence(device_key, nonces)
    for end in range(0, len(genuine.chain) - 30, 37):
        identity = dataclasses.replace(genuine, chain=genuine.chain[:end])
        result = run_appraisal(evidence, nonces, identity)
        assert R.CERT_UNTRUSTED in result.codes
        assert not result.authenticated


def test_hostile_trust_anchor(
    device_key: SigningKey, nonces: NonceIssuer, genuine: Identity
) -> None:
    evidence = sign_evidence(device_key, nonces)
    for anchor in (b"", genuine.anchor[:100], random.Random(RNG_SEED).randbytes(300)):
        identity = dataclasses.replace(genuine, anchor=anchor)
        _refused(run_appraisal(evidence, nonces, identity), {R.CERT_UNTRUSTED, R.SIGNATURE_INVALID})
