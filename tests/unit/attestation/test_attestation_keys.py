from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from attestation.keys import (
    KeyFileError,
    KeyKind,
    SigningKey,
    VerifyKey,
    load_private_key,
    save_private_key,
)


@pytest.fixture
def no_umask() -> Iterator[None]:
    # With umask 0 a file created 0o644 stays 0o644, so only the creation mode can make it 0o600.
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.parametrize("kind", list(KeyKind))
def test_sign_verify_round_trip(kind: KeyKind) -> None:
    key = SigningKey.generate(kind)
    sig = key.sign(b"claims")
    assert key.kind is kind
    assert key.public_key.kind is kind
    assert key.public_key.verify(sig, b"claims")
    assert not key.public_key.verify(sig, b"claimz")
    assert not SigningKey.generate(kind).public_key.verify(sig, b"claims")


@pytest.mark.parametrize("kind", list(KeyKind))
@pytest.mark.parametrize("garbage", [b"", b"\x00" * 64, b"\x30\x03\x02\x01", b"not a signature"])
def test_verify_returns_false_on_garbage_instead_of_raising(kind: KeyKind, garbage: bytes) -> None:
    assert SigningKey.generate(kind).public_key.verify(garbage, b"data") is False


def test_p256_signature_is_der_ecdsa_sha256(p256_key: SigningKey) -> None:
    sig = p256_key.sign(b"data")
    assert sig[0] == 0x30  # DER SEQUENCE, not a raw r||s pair
    pub = p256_key.public_key.cryptography_key
    assert isinstance(pub, ec.EllipticCurvePublicKey)
    pub.verify(sig, b"data", ec.ECDSA(hashes.SHA256()))  # raises if not ECDSA/SHA-256


@pytest.mark.parametrize("kind", list(KeyKind))
def test_key_id_is_sha256_of_spki_der(kind: KeyKind) -> None:
    pub = SigningKey.generate(kind).public_key
    der = pub.cryptography_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert pub.key_id == hashlib.sha256(der).hexdigest()


@pytest.mark.parametrize("kind", list(KeyKind))
def test_pem_round_trips(kind: KeyKind) -> None:
    key = SigningKey.generate(kind)
    pem = key.to_pem()
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8, unencrypted
    again = SigningKey.from_pem(pem)
    assert again.public_key == key.public_key
    assert again.public_key.verify(key.sign(b"x"), b"x")
    pub = VerifyKey.from_pem(key.public_key.to_pem())
    assert pub == key.public_key
    assert pub.key_id == key.public_key.key_id
    assert pub != SigningKey.generate(kind).public_key


def test_other_curves_are_refused() -> None:
    p384 = ec.generate_private_key(ec.SECP384R1())
    pem = p384.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(ValueError, match="unsupported key type"):
        SigningKey.from_pem(pem)
    with pytest.raises(ValueError, match="unsupported key type"):
        VerifyKey.from_cryptography(p384.public_key())
    with pytest.raises(ValueError, match="not an unencrypted PEM private key"):
        SigningKey.from_pem(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")


def test_repr_shows_no_key_material(device_key: SigningKey) -> None:
    text = repr(device_key)
    assert "PRIVATE" not in text
    assert device_key.to_pem().decode().splitlines()[1] not in text


@pytest.mark.usefixtures("no_umask")
def test_save_creates_owner_only_file(tmp_path: Path, device_key: SigningKey) -> None:
    path = tmp_path / "device.key"
    save_private_key(device_key, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_private_key(path).public_key == device_key.public_key
    assert [p.name for p in tmp_path.iterdir()] == ["device.key"]  # no temporary file left


@pytest.mark.usefixtures("no_umask")
def test_save_over_an_open_file_leaves_it_owner_only(
    tmp_path: Path, device_key: SigningKey
) -> None:
    path = tmp_path / "device.key"
    path.write_bytes(b"old")
    path.chmod(0o644)
    save_private_key(device_key, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_private_key(path).public_key == device_key.public_key


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o602, 0o644, 0o666])
def test_load_refuses_group_or_world_access(
    tmp_path: Path, device_key: SigningKey, mode: int
) -> None:
    path = tmp_path / "device.key"
    save_private_key(device_key, path)
    path.chmod(mode)
    with pytest.raises(KeyFileError) as info:
        load_private_key(path)
    assert str(path) in str(info.value)
    assert f"chmod 600 {path}" in str(info.value)


def test_load_accepts_owner_read_only(tmp_path: Path, device_key: SigningKey) -> None:
    path = tmp_path / "device.key"
    save_private_key(device_key, path)
    path.chmod(0o400)
    assert load_private_key(path).public_key == device_key.public_key


def test_load_reports_missing_and_non_key_files(tmp_path: Path) -> None:
    missing = tmp_path / "missing.key"
    with pytest.raises(KeyFileError, match=r"missing\.key"):
        load_private_key(missing)
    junk = tmp_path / "junk.key"
    fd = os.open(junk, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"not a key")
    os.close(fd)
    with pytest.raises(KeyFileError, match=r"junk\.key.*not an unencrypted PEM"):
        load_private_key(junk)


def test_create_key_file_is_owner_only_and_never_replaces(
    tmp_path: Path, p256_key: SigningKey, no_umask: None
) -> None:
    from attestation.keys import create_private_key_file

    path = tmp_path / "carol.key"
    create_private_key_file(p256_key, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_private_key(path).public_key == p256_key.public_key
    other = SigningKey.generate(KeyKind.ECDSA_P256)
    with pytest.raises(FileExistsError):
        create_private_key_file(other, path)
    # The first key is still there, and no temporary file was left behind.
    assert load_private_key(path).public_key == p256_key.public_key
    assert sorted(p.name for p in tmp_path.iterdir()) == ["carol.key"]
