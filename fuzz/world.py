"""The fixed facility the targets check against: keys derived from fixed seeds, so the signed
seed files `fuzz.make_seeds` writes still verify in every later run (and deep paths, behind a
valid certificate chain or signature, stay reachable). Test keys only: they sign nothing real."""

from __future__ import annotations

import datetime as dt
import hashlib
from functools import cache
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519

from attestation.keys import SigningKey

SEEDS = Path(__file__).parent / "seeds"
DEVICE_ID = "qpu-fuzz"
NOW = 1_700_000_000.0
NOW_DT = dt.datetime.fromtimestamp(NOW, dt.UTC)


def fixed_key(label: str) -> SigningKey:
    seed = hashlib.sha256(f"qtestbed fuzz {label}".encode()).digest()
    return SigningKey(ed25519.Ed25519PrivateKey.from_private_bytes(seed))


ROOT_KEY = fixed_key("root")
DEVICE_KEY = fixed_key("device")
AUDIT_KEY = fixed_key("audit")


@cache
def anchor_pem() -> bytes:
    """The facility root CA certificate (written once by `fuzz.make_seeds`)."""
    return (SEEDS / "world" / "anchor.pem").read_bytes()


@cache
def device_chain_pem() -> bytes:
    return (SEEDS / "world" / "device-chain.pem").read_bytes()
