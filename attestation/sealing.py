"""Sealed boxes to a Curve25519 public key: only the holder of the matching secret key opens one.

The broker seals each lease grant to the grant key of the connection it is meant for: an X25519
key pair the driver makes for that one connection (`new_keypair`) and announces in its Hello
(X25519 with a fresh ephemeral key, HKDF-SHA256, ChaCha20-Poly1305). CurveZMQ already encrypts
the link, but ZeroMQ routes by routing id, which a peer may choose: a process that takes over a
routing id (with another authorised key, or with the very same link key on another host) can
receive what the broker sends to it, and still cannot read a circuit sealed to a key that only
the connection it was meant for ever held.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

KEY_BYTES = 32
_NONCE_BYTES = 12
_INFO = b"qtestbed sealed box v1"


class SealError(Exception):
    """A sealed box could not be made or opened (wrong key, altered, or malformed)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Sealed:
    ephemeral_public: bytes
    nonce: bytes
    ciphertext: bytes


def new_keypair() -> tuple[bytes, bytes]:
    """A fresh X25519 key pair (secret, public), raw 32 bytes each, from the OS random source."""
    secret = X25519PrivateKey.generate()
    public = secret.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return secret.private_bytes_raw(), public


def public_of(secret: bytes) -> bytes:
    """The raw public key of a raw X25519 secret key."""
    if len(secret) != KEY_BYTES:
        raise SealError(f"a Curve25519 secret key has {KEY_BYTES} bytes, not {len(secret)}")
    return (
        X25519PrivateKey.from_private_bytes(secret)
        .public_key()
        .public_bytes(Encoding.Raw, PublicFormat.Raw)
    )


def sealable(raw: bytes) -> bool:
    """Whether a box can be sealed to `raw`: 32 bytes, and not a low-order point (one that gives
    no shared secret, so that nothing sealed to it would be secret)."""
    try:
        X25519PrivateKey.generate().exchange(_public(raw))
    except (SealError, ValueError):
        return False
    return True


def _key(shared: bytes, ephemeral: bytes, recipient: bytes) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=ephemeral + recipient, info=_INFO)
    return hkdf.derive(shared)


def _public(raw: bytes) -> X25519PublicKey:
    if len(raw) != KEY_BYTES:
        raise SealError(f"a Curve25519 public key has {KEY_BYTES} bytes, not {len(raw)}")
    return X25519PublicKey.from_public_bytes(raw)


def seal(recipient_public: bytes, plaintext: bytes, *, context: bytes) -> Sealed:
    """Encrypt `plaintext` so that only `recipient_public`'s secret key opens it; `context`
    (what the box is for) is authenticated, so a box made for one purpose fails for another."""
    recipient = _public(recipient_public)
    ephemeral = X25519PrivateKey.generate()
    ephemeral_public = ephemeral.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    try:
        shared = ephemeral.exchange(recipient)
    except ValueError as exc:  # a low-order point: no shared secret
        raise SealError(f"cannot seal to this public key: {exc}") from exc
    nonce = secrets.token_bytes(_NONCE_BYTES)
    aead = ChaCha20Poly1305(_key(shared, ephemeral_public, recipient_public))
    return Sealed(
        ephemeral_public=ephemeral_public,
        nonce=nonce,
        ciphertext=aead.encrypt(nonce, plaintext, context + recipient_public),
    )


def open_sealed(recipient_secret: bytes, sealed: Sealed, *, context: bytes) -> bytes:
    """The plaintext of a box sealed to this secret key's public key, or SealError."""
    if len(recipient_secret) != KEY_BYTES:
        raise SealError(f"a Curve25519 secret key has {KEY_BYTES} bytes")
    secret = X25519PrivateKey.from_private_bytes(recipient_secret)
    recipient_public = secret.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    try:
        shared = secret.exchange(_public(sealed.ephemeral_public))
        aead = ChaCha20Poly1305(_key(shared, sealed.ephemeral_public, recipient_public))
        return aead.decrypt(sealed.nonce, sealed.ciphertext, context + recipient_public)
    except (InvalidTag, ValueError) as exc:
        raise SealError("the sealed box is not for this key, or was altered") from exc
