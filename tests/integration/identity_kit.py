"""Certificates an attacker or an operator could make, for the identity tests: from the
facility's own CAs (which a test may read: it plays whoever holds them), or from a CA of its
own; each becomes a client profile for the running broker."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from pathlib import Path

from cryptography import x509

from attestation.keys import KeyKind, SigningKey, load_private_key, save_private_key
from attestation.pki import cert_from_pem, cert_to_pem, create_intermediate, issue_certificate
from qtestbed.client import Client, Profile
from qtestbed.shared.identity import principal_uri
from qtestbed.testing import LocalFacility

FACILITY_ID = "demo"


class Minter:
    """Issues client certificates from one CA of the facility, or from a vendor's."""

    def __init__(self, facility: LocalFacility, folder: Path) -> None:
        self.facility = facility
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        ca = facility.offline_ca  # the CA keys, with copies of their certificates
        self.root = (load_private_key(ca / "ca.key"), cert_from_pem((ca / "ca.pem").read_bytes()))
        self.cas = {
            "clients": self._load(ca / "clients-ca"),
            "devices": self._load(ca / "devices-ca"),
            "root": self.root,
        }

    @staticmethod
    def _load(stem: Path) -> tuple[SigningKey, x509.Certificate]:
        key = load_private_key(stem.with_suffix(".key"))
        return key, cert_from_pem(stem.with_suffix(".pem").read_bytes())

    def vendor_ca(self) -> tuple[SigningKey, x509.Certificate]:
        """Another intermediate the root signed (a delegated device-issuing vendor CA)."""
        key = SigningKey.generate(KeyKind.ECDSA_P256)
        cert = create_intermediate(
            "vendor devices CA",
            key,
            parent_key=self.root[0],
            parent_cert=self.root[1],
            now=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5),
            days=30,
        )
        return key, cert

    def client(
        self,
        *,
        issuer: str | tuple[SigningKey, x509.Certificate] = "clients",
        name: str = "olivia",
        common_name: str | None = None,
        facility_id: str = FACILITY_ID,
        client_auth: bool = True,
        starts_in: dt.timedelta = dt.timedelta(minutes=-5),
        days: int = 1,
    ) -> tuple[Client, str]:
        """A client for the broker with a fresh certificate, and that certificate's serial."""
        chain, key, serial = self._mint(
            issuer=issuer,
            name=name,
            common_name=common_name,
            facility_id=facility_id,
            client_auth=client_auth,
            starts_in=starts_in,
            days=days,
        )
        return self.profile(chain, key), serial

    def files(
        self,
        *,
        issuer: str | tuple[SigningKey, x509.Certificate] = "clients",
        name: str = "prometheus",
        starts_in: dt.timedelta = dt.timedelta(minutes=-5),
        days: int = 1,
    ) -> tuple[Path, Path, str]:
        """A fresh certificate (its issuer's after it) and key as files, and its serial."""
        chain, key, serial = self._mint(issuer=issuer, name=name, starts_in=starts_in, days=days)
        stem = self.folder / uuid.uuid4().hex[:8]
        stem.with_suffix(".pem").write_bytes(chain)
        save_private_key(key, stem.with_suffix(".key"))
        return stem.with_suffix(".pem"), stem.with_suffix(".key"), serial

    def _mint(
        self,
        *,
        issuer: str | tuple[SigningKey, x509.Certificate],
        name: str,
        common_name: str | None = None,
        facility_id: str = FACILITY_ID,
        client_auth: bool = True,
        starts_in: dt.timedelta,
        days: int,
    ) -> tuple[bytes, SigningKey, str]:
        ca_key, ca_cert = self.cas[issuer] if isinstance(issuer, str) else issuer
        key = SigningKey.generate(KeyKind.ECDSA_P256)
        cert = issue_certificate(
            ca_key=ca_key,
            ca_cert=ca_cert,
            subject_cn=common_name or name,
            public_key=key.public_key,
            now=dt.datetime.now(dt.UTC) + starts_in,
            days=days,
            client=client_auth,
            uris=[principal_uri(facility_id, name)],
        )
        chain = cert_to_pem(cert) + (cert_to_pem(ca_cert) if ca_cert != self.root[1] else b"")
        return chain, key, format(cert.serial_number, "x")

    def profile(self, chain: bytes, key: SigningKey) -> Client:
        stem = self.folder / uuid.uuid4().hex[:8]
        stem.with_suffix(".pem").write_bytes(chain)
        save_private_key(key, stem.with_suffix(".key"))
        assert self.facility.addresses is not None
        profile = Profile(
            broker=self.facility.addresses.grpc,
            ca_cert=self.facility.root / "ca" / "ca.pem",
            cert=stem.with_suffix(".pem"),
            key=stem.with_suffix(".key"),
        )
        return Client(dataclasses.replace(profile))
