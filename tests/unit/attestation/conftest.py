"""Keys and a PKI shared by the attestation tests, generated once per session."""

from __future__ import annotations

import datetime as dt

import pytest

from attestation.keys import KeyKind, SigningKey
from attestation.pki import fingerprint
from tests.unit.attestation.support import NOW_DT, Identity, Pki, make_pki


@pytest.fixture(scope="session")
def device_key() -> SigningKey:
    return SigningKey.generate(KeyKind.ED25519)


@pytest.fixture(scope="session")
def other_key() -> SigningKey:
    return SigningKey.generate(KeyKind.ED25519)


@pytest.fixture(scope="session")
def p256_key() -> SigningKey:
    return SigningKey.generate(KeyKind.ECDSA_P256)


@pytest.fixture(scope="session")
def pki() -> Pki:
    """Root and intermediate valid around the appraisal tests' NOW."""
    return make_pki(start=NOW_DT - dt.timedelta(days=10))


@pytest.fixture(scope="session")
def genuine(pki: Pki, device_key: SigningKey) -> Identity:
    """The device's registered certificate (for `device_key`, via the intermediate)."""
    cert = pki.device_cert(device_key, start=NOW_DT - dt.timedelta(days=1))
    return Identity(
        chain=pki.chain(cert), anchor=pki.anchor, registered=frozenset({fingerprint(cert)})
    )
