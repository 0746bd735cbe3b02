"""Device certificate chains: issuing intermediates and validating chains to the trust anchor."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import random

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from attestation.keys import KeyKind, SigningKey
from attestation.pki import (
    MAX_CHAIN_BYTES,
    CertificateError,
    VerifiedDevice,
    create_ca,
    create_intermediate,
    device_uri,
    normalize_fingerprint,
    normalize_serial,
    verify_device_certificate,
    verify_device_chain,
)
from attestation.reasons import ReasonCode
from tests.unit.attestation.support import DEVICE, Pki, make_pki, pem, raw_cert

START = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)
NOW = START + dt.timedelta(days=1)
SECOND = dt.timedelta(seconds=1)
NO_REVOCATIONS: frozenset[str] = frozenset()


@pytest.fixture(scope="module")
def pki() -> Pki:
    return make_pki(start=START)


def _verify(
    chain: bytes,
    anchor: bytes,
    *,
    now: dt.datetime = NOW,
    revoked: frozenset[str] = NO_REVOCATIONS,
) -> VerifiedDevice:
    return verify_device_chain(chain, anchor, now=now, revoked_serials=revoked)


def _refused(
    code: ReasonCode,
    chain: bytes,
    anchor: bytes,
    *,
    match: str | None = None,
    now: dt.datetime = NOW,
    revoked: frozenset[str] = NO_REVOCATIONS,
) -> CertificateError:
    with pytest.raises(CertificateError, match=match) as info:
        _verify(chain, anchor, now=now, revoked=revoked)
    assert info.value.code is code, str(info.value)
    return info.value


# --- issuing -------------------------------------------------------------------------------


def test_intermediate_certificate_extensions(pki: Pki) -> None:
    inter = pki.intermediate
    assert inter.issuer == pki.root.subject
    constraints = inter.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert (constraints.value.ca, constraints.value.path_length) == (True, 0)
    usage = inter.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign
    assert not usage.digital_signature
    root_ski = pki.root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = inter.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == root_ski.digest
    inter.verify_directly_issued_by(pki.root)
    root_constraints = pki.root.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert root_constraints.path_length == 1


def test_create_ca_defaults_to_path_length_zero_and_refuses_negative(p256_key: SigningKey) -> None:
    ca = create_ca("ca", p256_key, now=START, days=1)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0
    with pytest.raises(ValueError, match="path_length"):
        create_ca("ca", p256_key, now=START, days=1, path_length=-1)


def test_create_intermediate_refuses_a_parent_that_may_not_have_one(p256_key: SigningKey) -> None:
    leaf_only_root = create_ca("root", p256_key, now=START, days=1)
    with pytest.raises(ValueError, match="may not sign intermediate CAs"):
        create_intermediate(
            "i", p256_key, parent_key=p256_key, parent_cert=leaf_only_root, now=START, days=1
        )


def test_create_intermediate_refuses_a_key_that_is_not_the_parents(pki: Pki) -> None:
    with pytest.raises(ValueError, match="parent_key is not the key of parent_cert"):
        create_intermediate(
            "i",
            pki.intermediate_key,
            parent_key=pki.intermediate_key,
            parent_cert=pki.root,
            now=START,
            days=1,
        )


# --- valid chains --------------------------------------------------------------------------


@pytest.mark.parametrize("ca_kind", [KeyKind.ECDSA_P256, KeyKind.ED25519])
@pytest.mark.parametrize("leaf_kind", [KeyKind.ED25519, KeyKind.ECDSA_P256])
def test_chain_via_intermediate(ca_kind: KeyKind, leaf_kind: KeyKind) -> None:
    pki = make_pki(start=START, ca_kind=ca_kind)
    leaf_key = SigningKey.generate(leaf_kind)
    cert = pki.device_cert(leaf_key, start=START)
    verified = _verify(pki.chain(cert), pki.anchor)
    assert verified.device_id == DEVICE
    assert verified.key == leaf_key.public_key
    assert verified.key.kind is leaf_kind
    assert verified.serial == format(cert.serial_number, "x")
    assert verified.serial == verified.serial.lower()
    assert not verified.serial.startswith("0x")
    der = cert.public_bytes(serialization.Encoding.DER)
    assert verified.fingerprint == hashlib.sha256(der).hexdigest()


def test_chain_without_intermediate(pki: Pki, device_key: SigningKey) -> None:
    cert = pki.device_cert(device_key, start=START, direct=True)
    assert _verify(pem(cert), pki.anchor).key == device_key.public_key


def test_verify_device_certificate_accepts_a_chain(pki: Pki, device_key: SigningKey) -> None:
    cert = pki.device_cert(device_key, start=START)
    device_id, key = verify_device_certificate(pki.chain(cert), pki.anchor, now=NOW)
    assert (device_id, key) == (DEVICE, device_key.public_key)


# --- validity ------------------------------------------------------------------------------


def _short_lived(which: str) -> tuple[Pki, x509.Certificate, x509.Certificate]:
    """A PKI in which `which` ("device", "intermediate" or "anchor") ends first; that
    certificate and the device certificate."""
    days = {"device": (30, 30, 10), "intermediate": (30, 10, 30), "anchor": (10, 30, 30)}[which]
    pki = make_pki(start=START, days=days[0], intermediate_days=days[1])
    device = pki.device_cert(SigningKey.generate(), start=START, days=days[2])
    target = {"device": device, "intermediate": pki.intermediate, "anchor": pki.root}[which]
    return pki, target, device


LABELS = {
    "device": "device certificate",
    "intermediate": "intermediate CA certificate 1",
    "anchor": "trust anchor CA certificate",
}


@pytest.mark.parametrize("which", ["device", "intermediate", "anchor"])
def test_expired_by_one_second(which: str) -> None:
    pki, target, device = _short_lived(which)
    end = target.not_valid_after_utc
    assert _verify(pki.chain(device), pki.anchor, now=end).device_id == DEVICE  # inclusive
    error = _refused(
        ReasonCode.CERT_EXPIRED, pki.chain(device), pki.anchor, now=end + SECOND, match="expired"
    )
    assert str(error).startswith(LABELS[which])


@pytest.mark.parametrize("which", ["device", "intermediate", "anchor"])
def test_not_yet_valid_by_one_second(which: str) -> None:
    late = START + dt.timedelta(days=5)
    starts = {name: late if name == which else START for name in LABELS}
    root_key, inter_key = SigningKey.generate(KeyKind.ECDSA_P256), SigningKey.generate()
    root = create_ca("root", root_key, now=starts["anchor"], days=30, path_length=1)
    inter = create_intermediate(
        "inter",
        inter_key,
        parent_key=root_key,
        parent_cert=root,
        now=starts["intermediate"],
        days=30,
    )
    pki = Pki(root_key=root_key, root=root, intermediate_key=inter_key, intermediate=inter)
    chain = pki.chain(pki.device_cert(SigningKey.generate(), start=starts["device"]))
    assert _verify(chain, pki.anchor, now=late).device_id == DEVICE  # inclusive
    error = _refused(
        ReasonCode.CERT_NOT_YET_VALID, chain, pki.anchor, now=late - SECOND, match="not yet valid"
    )
    assert str(error).startswith(LABELS[which])


# --- revocation ----------------------------------------------------------------------------


def test_revoked_device_certificate(pki: Pki, device_key: SigningKey) -> None:
    cert = pki.device_cert(device_key, start=START)
    serial = format(cert.serial_number, "x")
    _refused(
        ReasonCode.CERT_REVOKED,
        pki.chain(cert),
        pki.anchor,
        revoked=frozenset({"0", serial}),
        match="device certificate .* is revoked",
    )


def test_revoked_intermediate_refuses_every_device_below_it(
    pki: Pki, device_key: SigningKey
) -> None:
    revoked = frozenset({format(pki.intermediate.serial_number, "x")})
    for key in (device_key, SigningKey.generate(KeyKind.ECDSA_P256)):
        cert = pki.device_cert(key, start=START)
        _refused(
            ReasonCode.CERT_REVOKED,
            pki.chain(cert),
            pki.anchor,
            revoked=revoked,
            match="intermediate CA certificate 1",
        )
    direct = pki.device_cert(device_key, start=START, direct=True)
    assert _verify(pem(direct), pki.anchor, revoked=revoked).device_id == DEVICE


def test_revoked_serials_are_matched_in_any_common_spelling(
    pki: Pki, device_key: SigningKey
) -> None:
    cert = pki.device_cert(device_key, start=START)
    serial = format(cert.serial_number, "x")
    padded = serial.zfill(len(serial) + len(serial) % 2)
    colons = ":".join(padded[i : i + 2] for i in range(0, len(padded), 2)).upper()
    for spelling in (serial.upper(), "0x" + serial, "00" + serial, colons):
        _refused(
            ReasonCode.CERT_REVOKED, pki.chain(cert), pki.anchor, revoked=frozenset({spelling})
        )
    assert normalize_serial("0x00AB") == "ab"
    assert normalize_fingerprint("AB:cd:0F") == "abcd0f"


def test_revocation_is_reported_before_expiry(pki: Pki, device_key: SigningKey) -> None:
    cert = pki.device_cert(device_key, start=START, days=1)
    revoked = frozenset({format(cert.serial_number, "x")})
    later = START + dt.timedelta(days=2)
    _refused(ReasonCode.CERT_REVOKED, pki.chain(cert), pki.anchor, now=later, revoked=revoked)


# --- untrusted -----------------------------------------------------------------------------


@pytest.mark.parametrize("same_names", [True, False])
def test_chain_from_another_ca(pki: Pki, device_key: SigningKey, same_names: bool) -> None:
    name = "qtestbed test root" if same_names else "rogue root"
    rogue = make_pki(start=START, root_name=name)
    cert = rogue.device_cert(device_key, start=START)
    _refused(
        ReasonCode.CERT_UNTRUSTED,
        rogue.chain(cert),
        pki.anchor,
        match="intermediate CA certificate 1 .* is not signed by this CA",
    )


def test_device_from_a_rogue_intermediate_with_our_intermediates_name(
    pki: Pki, device_key: SigningKey
) -> None:
    rogue = make_pki(start=START)  # same intermediate name, other key
    cert = rogue.device_cert(device_key, start=START)
    chain = pem(cert, pki.intermediate)
    _refused(ReasonCode.CERT_UNTRUSTED, chain, pki.anchor, match="device certificate is not signed")


def test_missing_intermediate(pki: Pki, device_key: SigningKey) -> None:
    cert = pki.device_cert(device_key, start=START)
    _refused(ReasonCode.CERT_UNTRUSTED, pem(cert), pki.anchor, match="not signed by this CA")


def test_reordered_chain(pki: Pki, device_key: SigningKey) -> None:
    cert = pki.device_cert(device_key, start=START)
    _refused(
        ReasonCode.CERT_UNTRUSTED, pem(pki.intermediate, cert), pki.anchor, match="out of order"
    )


def test_reordered_intermediates(device_key: SigningKey) -> None:
    root_key, upper_key, lower_key = (SigningKey.generate(KeyKind.ECDSA_P256) for _ in range(3))
    root = create_ca("root", root_key, now=START, days=30, path_length=2)
    upper = raw_cert(
        subject="upper",
        issuer=root,
        signer=root_key,
        public_key=upper_key.public_key,
        start=START,
        ca=True,
        path_length=1,
        key_cert_sign=True,
    )
    lower = create_intermediate(
        "lower", lower_key, parent_key=upper_key, parent_cert=upper, now=START, days=30
    )
    pki = Pki(root_key=root_key, root=root, intermediate_key=lower_key, intermediate=lower)
    cert = pki.device_cert(device_key, start=START)
    assert _verify(pem(cert, lower, upper), pem(root)).device_id == DEVICE
    _refused(ReasonCode.CERT_UNTRUSTED, pem(cert, upper, lower), pem(root), match="not signed by")


def test_chain_must_not_repeat_the_anchor(pki: Pki, device_key: SigningKey) -> None:
    cert = pki.device_cert(device_key, start=START)
    chain = pki.chain(cert) + pki.anchor
    _refused(
        ReasonCode.CERT_UNTRUSTED, chain, pki.anchor, match="must not include the trust anchor"
    )


def test_root_path_length_zero_allows_no_intermediate(device_key: SigningKey) -> None:
    root_key, inter_key = SigningKey.generate(), SigningKey.generate()
    root = create_ca("root", root_key, now=START, days=30)  # path length 0
    inter = raw_cert(
        subject="inter",
        issuer=root,
        signer=root_key,
        public_key=inter_key.public_key,
        start=START,
        ca=True,
        path_length=0,
        key_cert_sign=True,
    )
    pki = Pki(root_key=root_key, root=root, intermediate_key=inter_key, intermediate=inter)
    cert = pki.device_cert(device_key, start=START)
    _refused(
        ReasonCode.CERT_UNTRUSTED,
        pki.chain(cert),
        pki.anchor,
        match="trust anchor CA certificate allows 0 intermediate",
    )


def test_intermediate_path_length_zero_allows_no_sub_intermediate(device_key: SigningKey) -> None:
    root_key, inter_key, sub_key = (SigningKey.generate() for _ in range(3))
    root = create_ca("root", root_key, now=START, days=30, path_length=2)
    inter = create_intermediate(
        "inter", inter_key, parent_key=root_key, parent_cert=root, now=START, days=30
    )
    sub = raw_cert(
        subject="sub",
        issuer=inter,
        signer=inter_key,
        public_key=sub_key.public_key,
        start=START,
        ca=True,
        path_length=0,
        key_cert_sign=True,
    )
    deep = Pki(root_key=root_key, root=root, intermediate_key=sub_key, intermediate=sub)
    cert = deep.device_cert(device_key, start=START)
    _refused(
        ReasonCode.CERT_UNTRUSTED,
        pem(cert, sub, inter),
        pem(root),
        match="intermediate CA certificate 2 .* allows 0 intermediate",
    )


def test_device_certificate_cannot_act_as_a_ca(pki: Pki, device_key: SigningKey) -> None:
    holder_key = SigningKey.generate()
    holder = pki.device_cert(holder_key, start=START, device_id="qpu-9", direct=True)
    victim = raw_cert(
        subject="qpu-1",
        issuer=holder,
        signer=holder_key,
        public_key=device_key.public_key,
        start=START,
        uris=[device_uri(DEVICE)],
    )
    chain = pem(victim, holder)
    _refused(ReasonCode.CERT_UNTRUSTED, chain, pki.anchor, match="1 .* is not a CA certificate")


@pytest.mark.parametrize(
    ("ca", "key_cert_sign", "message"),
    [(None, True, "is not a CA"), (True, False, "no keyCertSign"), (True, None, "no keyCertSign")],
)
def test_issuer_needs_ca_constraints_and_key_cert_sign(
    pki: Pki, device_key: SigningKey, ca: bool | None, key_cert_sign: bool | None, message: str
) -> None:
    weak_key = SigningKey.generate()
    weak = raw_cert(
        subject="weak",
        issuer=pki.root,
        signer=pki.root_key,
        public_key=weak_key.public_key,
        start=START,
        ca=ca,
        key_cert_sign=key_cert_sign,
    )
    cert = Pki(
        root_key=pki.root_key, root=pki.root, intermediate_key=weak_key, intermediate=weak
    ).device_cert(device_key, start=START)
    _refused(ReasonCode.CERT_UNTRUSTED, pem(cert, weak), pki.anchor, match=message)


def test_ca_certificate_presented_as_the_device_certificate(
    pki: Pki, device_key: SigningKey
) -> None:
    fake = raw_cert(
        subject="qpu-1",
        issuer=pki.intermediate,
        signer=pki.intermediate_key,
        public_key=device_key.public_key,
        start=START,
        ca=True,
        path_length=0,
        key_cert_sign=True,
        uris=[device_uri(DEVICE)],
    )
    _refused(ReasonCode.CERT_UNTRUSTED, pki.chain(fake), pki.anchor, match="is a CA certificate")


def test_unknown_critical_extension(pki: Pki, device_key: SigningKey) -> None:
    cert = raw_cert(
        subject="qpu-1",
        issuer=pki.intermediate,
        signer=pki.intermediate_key,
        public_key=device_key.public_key,
        start=START,
        uris=[device_uri(DEVICE)],
        critical_unknown=True,
    )
    _refused(ReasonCode.CERT_UNTRUSTED, pki.chain(cert), pki.anchor, match="critical extension")


def test_anchor_that_is_not_a_ca(pki: Pki, device_key: SigningKey) -> None:
    cert = pki.device_cert(device_key, start=START, direct=True)
    _refused(ReasonCode.CERT_UNTRUSTED, pem(cert), pem(cert), match="not a CA")


def test_anchor_must_be_one_certificate(pki: Pki, device_key: SigningKey) -> None:
    cert = pki.device_cert(device_key, start=START)
    two = pki.anchor + pem(pki.intermediate)
    _refused(ReasonCode.CERT_UNTRUSTED, pki.chain(cert), two, match="one certificate, got 2")


def _garbage_chains(valid: bytes) -> list[bytes]:
    rng = random.Random(1)
    body = valid.split(b"\n")
    return [
        b"",
        b"not a certificate",
        bytes(rng.getrandbits(8) for _ in range(2000)),
        valid[: len(valid) // 2],
        valid[:-40],
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        b"\n".join([*body[:3], b"!!!!", *body[4:]]),
        b"-----BEGIN CERTIFICATE-----\n" + b"A" * MAX_CHAIN_BYTES + b"\n-----END CERTIFICATE-----",
        valid * 9,
    ]


def _with_version(cert: x509.Certificate, version: int) -> bytes:
    """The certificate re-encoded with another X.509 version number (found by fuzzing: the
    parser raises InvalidVersion, which is not a ValueError)."""
    der = cert.public_bytes(serialization.Encoding.DER)
    v3 = bytes.fromhex("a003020102")
    assert der.count(v3) == 1
    body = der.replace(v3, bytes.fromhex("a0030201") + bytes([version]))
    lines = base64.encodebytes(body)
    return b"-----BEGIN CERTIFICATE-----\n" + lines + b"-----END CERTIFICATE-----\n"


def test_malformed_input_is_always_cert_untrusted(pki: Pki, device_key: SigningKey) -> None:
    valid = pki.chain(pki.device_cert(device_key, start=START))
    bad_version = _with_version(pki.device_cert(device_key, start=START), 20)
    _refused(ReasonCode.CERT_UNTRUSTED, bad_version + pem(pki.intermediate), pki.anchor)
    _refused(
        ReasonCode.CERT_UNTRUSTED,
        pki.chain(pki.device_cert(device_key, start=START)),
        _with_version(pki.root, 20),
    )
    for garbage in _garbage_chains(valid):
        _refused(ReasonCode.CERT_UNTRUSTED, garbage, pki.anchor)
        _refused(ReasonCode.CERT_UNTRUSTED, valid, garbage)


@pytest.mark.filterwarnings("ignore:Parsed a serial number which wasn't positive")
def test_non_positive_serial_is_refused(pki: Pki, device_key: SigningKey) -> None:
    cert = pki.device_cert(device_key, start=START)
    der = bytearray(cert.public_bytes(serialization.Encoding.DER))
    # TBSCertificate starts: version [0] (a0 03 02 01 02), then the serial as 02 <length> <bytes>.
    at = der.index(bytes.fromhex("a003020102")) + 5
    assert der[at] == 0x02
    der[at + 2] |= 0x80  # the sign bit: a negative serial, which RFC 5280 forbids
    negative = b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(bytes(der))
    negative += b"-----END CERTIFICATE-----\n"
    _refused(
        ReasonCode.CERT_UNTRUSTED,
        negative + pem(pki.intermediate),
        pki.anchor,
        match="serial number that is not positive",
    )


def test_certificate_error_defaults_to_untrusted() -> None:
    assert CertificateError("x").code is ReasonCode.CERT_UNTRUSTED
    assert CertificateError("x", ReasonCode.CERT_EXPIRED).code is ReasonCode.CERT_EXPIRED
