"""The one wrapper over `cryptography` for signing keys: Ed25519 and ECDSA P-256 only.

Device attestation keys are Ed25519; TLS keys are P-256 because gRPC's TLS stacks all accept it.
Everything else in this package signs and verifies through these two classes.
"""

from __future__ import annotations

import enum
import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.types import (
    PrivateKeyTypes,
    PublicKeyTypes,
)

from attestation.secretfile import write_secret

PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey
PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey


class KeyKind(enum.Enum):
    """The signature algorithms this package accepts."""

    ED25519 = "ed25519"  # Ed25519 (RFC 8032); used for device attestation keys
    ECDSA_P256 = "ecdsa-p256"  # ECDSA over NIST P-256 with SHA-256, DER signatures; used for TLS


class KeyFileError(Exception):
    """A private key file cannot be used; the message names the file and what to do."""


def _kind_of(key: PrivateKeyTypes | PublicKeyTypes) -> KeyKind:
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return KeyKind.ED25519
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) and isinstance(
        key.curve, ec.SECP256R1
    ):
        return KeyKind.ECDSA_P256
    raise ValueError(f"unsupported key type {type(key).__name__}: use Ed25519 or ECDSA P-256")


class VerifyKey:
    """A public key that checks signatures; equal keys have equal `key_id`s."""

    __slots__ = ("_der", "_key", "_kind")

    def __init__(self, key: PublicKey) -> None:
        self._kind = _kind_of(key)
        self._key = key
        self._der = key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    @classmethod
    def from_cryptography(cls, pubkey: PublicKeyTypes) -> VerifyKey:
        if not isinstance(pubkey, ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey):
            raise ValueError(f"unsupported key type {type(pubkey).__name__}")
        return cls(pubkey)

    @classmethod
    def from_pem(cls, data: bytes) -> VerifyKey:
        try:
            pubkey = serialization.load_pem_public_key(data)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"not a PEM public key: {exc}") from exc
        return cls.from_cryptography(pubkey)

    @property
    def kind(self) -> KeyKind:
        return self._kind

    @property
    def key_id(self) -> str:
        """Hex SHA-256 of the DER SubjectPublicKeyInfo, the DSSE `keyid` of this key."""
        return hashlib.sha256(self._der).hexdigest()

    @property
    def cryptography_key(self) -> PublicKey:
        return self._key

    def to_pem(self) -> bytes:
        return self._key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def verify(self, signature: bytes, data: bytes) -> bool:
        """True iff `signature` is valid over `data`; a bad or garbled signature returns False."""
        try:
            if isinstance(self._key, ed25519.Ed25519PublicKey):
                self._key.verify(signature, data)
            else:
                self._key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError):
            return False
        return True

    def __eq__(self, other: object) -> bool:
        return isinstance(other, VerifyKey) and self._der == other._der

    def __hash__(self) -> int:
        return hash(self._der)

    def __repr__(self) -> str:
        return f"VerifyKey(kind={self._kind.value}, key_id={self.key_id[:16]}...)"


class SigningKey:
    """A private key; its repr never shows key material."""

    __slots__ = ("_key", "_kind")

    def __init__(self, key: PrivateKey) -> None:
        self._kind = _kind_of(key)
        self._key = key

    @classmethod
    def generate(cls, kind: KeyKind = KeyKind.ED25519) -> SigningKey:
        if kind is KeyKind.ED25519:
            return cls(ed25519.Ed25519PrivateKey.generate())
        return cls(ec.generate_private_key(ec.SECP256R1()))

    @classmethod
    def from_pem(cls, data: bytes) -> SigningKey:
        """Load an unencrypted PEM private key (PKCS#8 or traditional)."""
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"not an unencrypted PEM private key: {exc}") from exc
        if not isinstance(key, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey):
            raise ValueError(f"unsupported key type {type(key).__name__}")
        return cls(key)

    @property
    def kind(self) -> KeyKind:
        return self._kind

    @property
    def public_key(self) -> VerifyKey:
        return VerifyKey(self._key.public_key())

    @property
    def cryptography_key(self) -> PrivateKey:
        return self._key

    def sign(self, data: bytes) -> bytes:
        if isinstance(self._key, ed25519.Ed25519PrivateKey):
            return self._key.sign(data)
        return self._key.sign(data, ec.ECDSA(hashes.SHA256()))

    def to_pem(self) -> bytes:
        """Unencrypted PKCS#8: the file's permissions are what protect it."""
        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def __repr__(self) -> str:
        return f"SigningKey(kind={self._kind.value}, key_id={self.public_key.key_id[:16]}...)"


def save_private_key(key: SigningKey, path: Path) -> None:
    """Write `key` readable by its owner only, replacing any existing file atomically
    (`attestation.secretfile.write_secret`: 0600 from creation, never chmod-ed after)."""
    write_secret(path, key.to_pem())


def create_private_key_file(key: SigningKey, path: Path) -> None:
    """Write `key` to a new file readable by its owner only; FileExistsError if `path` exists.

    For a key someone is about to depend on (a researcher's own): an existing key is never
    replaced, and `path` never holds a partial key nor one with wider permissions.
    """
    write_secret(path, key.to_pem(), replace=False)


def load_private_key(path: Path) -> SigningKey:
    """Load a private key, refusing one that group or others could read or write.

    Every failure (missing, unreadable, too open, not a key) is a `KeyFileError` naming the file.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise KeyFileError(f"cannot open private key file {path}: {exc.strerror}") from exc
    # fstat on the open descriptor: checking the path and then opening it would race a swap.
    with os.fdopen(fd, "rb") as handle:
        mode = os.fstat(handle.fileno()).st_mode
        if mode & 0o077:
            raise KeyFileError(
                f"private key file {path} is accessible by group or others "
                f"(mode {mode & 0o777:#o}); run `chmod 600 {path}`"
            )
        data = handle.read()
    try:
        return SigningKey.from_pem(data)
    except ValueError as exc:
        raise KeyFileError(f"private key file {path}: {exc}") from exc
