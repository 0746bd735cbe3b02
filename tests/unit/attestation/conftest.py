"""Keys shared by the attestation tests, generated once per session."""

from __future__ import annotations

import pytest

from attestation.keys import KeyKind, SigningKey


@pytest.fixture(scope="session")
def device_key() -> SigningKey:
    return SigningKey.generate(KeyKind.ED25519)


@pytest.fixture(scope="session")
def other_key() -> SigningKey:
    return SigningKey.generate(KeyKind.ED25519)


@pytest.fixture(scope="session")
def p256_key() -> SigningKey:
    return SigningKey.generate(KeyKind.ECDSA_P256)
