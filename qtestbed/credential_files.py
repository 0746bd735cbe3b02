"""The files of onboarding: a researcher's key, request and profile, and the operator's
client-issuing CA and the certificates it issues. Local work only; nothing here talks to the
broker, and nothing here is run by it (the broker needs the CA's certificate, never its key).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from attestation.issuance import IssuanceError, check_client_ca, create_csr
from attestation.keys import (
    KeyFileError,
    KeyKind,
    SigningKey,
    VerifyKey,
    create_private_key_file,
    load_private_key,
)
from attestation.pki import CertificateError, cert_from_pem, cert_to_pem
from attestation.secretfile import write_public
from qtestbed.shared.identity import check_facility_id, facility_id_from_name, principal_uri

CA_KEY = "clients-ca.key"
CA_CERT = "clients-ca.pem"


class CredentialFileError(Exception):
    """A credential file cannot be read or written as asked; the message says what to do."""


@dataclass(frozen=True, kw_only=True, slots=True)
class IssuingCa:
    """The client-issuing CA, loaded from where the operator keeps it."""

    key: SigningKey
    cert: x509.Certificate


@dataclass(frozen=True, kw_only=True, slots=True)
class RequestFiles:
    """What `credential request` wrote: the key stays, the CSR goes to the operator."""

    principal_uri: str
    key: Path
    csr: Path
    profile: Path
    cert: Path  # where the issued certificate goes (not written yet)
    ca_cert: Path  # the facility root the profile trusts (copied here, or still to come)
    ca_cert_present: bool


def load_issuing_ca(ca_dir: Path) -> IssuingCa:
    """clients-ca.key and clients-ca.pem from `ca_dir`; the key must be owner-only."""
    try:
        key = load_private_key(ca_dir / CA_KEY)
    except KeyFileError as exc:
        raise CredentialFileError(
            f"{exc} (--ca-dir must hold the client-issuing CA: {CA_KEY} and {CA_CERT})"
        ) from exc
    try:
        cert = cert_from_pem((ca_dir / CA_CERT).read_bytes())
        check_client_ca(cert)
    except OSError as exc:
        raise CredentialFileError(
            f"cannot read {ca_dir / CA_CERT}: {exc.strerror}; --ca-dir must hold the "
            f"client-issuing CA's {CA_CERT} beside its {CA_KEY}"
        ) from exc
    except (CertificateError, IssuanceError) as exc:
        raise CredentialFileError(f"cannot use {ca_dir / CA_CERT}: {exc}") from exc
    if VerifyKey.from_cryptography(cert.public_key()) != key.public_key:
        raise CredentialFileError(
            f"{ca_dir / CA_KEY} is not the key of {ca_dir / CA_CERT}; keep the pair together"
        )
    return IssuingCa(key=key, cert=cert)


def facility_id_of(facility_file: Path) -> str:
    """The facility id a facility.toml names ([facility] id, or the one derived from its name,
    as the broker derives it)."""
    try:
        info = tomllib.loads(facility_file.read_text()).get("facility", {})
        name = str(info.get("name", "qtestbed facility"))
        return check_facility_id(str(info.get("id", facility_id_from_name(name))))
    except (OSError, tomllib.TOMLDecodeError, ValueError) as exc:
        raise CredentialFileError(
            f"cannot read the facility id from {facility_file}: {exc}"
        ) from exc


def certificate_bundle(cert: x509.Certificate, ca: IssuingCa) -> bytes:
    """What a certificate file holds: the certificate, then the CA that issued it."""
    return cert_to_pem(cert) + cert_to_pem(ca.cert)


def write_public_file(path: Path, data: bytes) -> None:
    """Write a public file (certificate, CSR, profile) whole, replacing any old one atomically."""
    try:
        write_public(path, data)
    except OSError as exc:
        raise CredentialFileError(f"cannot write {path}: {exc.strerror or exc}") from exc


def file_stem(name: str) -> str:
    """A file name made from a principal name (unsafe characters become '_')."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name).lstrip(".") or "principal"


def write_request(
    name: str, *, facility_id: str, out: Path, broker: str, ca_cert: Path | None
) -> RequestFiles:
    """A new P-256 key (owner-only, never replacing one), a CSR naming the principal, and a
    profile that works once the certificate is put beside them."""
    uri = principal_uri(facility_id, name)
    stem = file_stem(name)
    files = RequestFiles(
        principal_uri=uri,
        key=out / f"{stem}.key",
        csr=out / f"{stem}.csr",
        profile=out / f"{stem}.toml",
        cert=out / f"{stem}.pem",
        ca_cert=out / "ca.pem",
        ca_cert_present=ca_cert is not None or (out / "ca.pem").exists(),
    )
    _refuse_existing(files)
    root_pem = _read_root(ca_cert) if ca_cert is not None else None
    out.mkdir(parents=True, exist_ok=True)
    key = SigningKey.generate(KeyKind.ECDSA_P256)
    try:
        create_private_key_file(key, files.key)
    except OSError as exc:
        raise CredentialFileError(f"cannot write {files.key}: {exc.strerror or exc}") from exc
    write_public_file(files.csr, create_csr(key, uri, common_name=name))
    if root_pem is not None:
        write_public_file(files.ca_cert, root_pem)
    write_public_file(files.profile, _profile_toml(name, facility_id, broker, files).encode())
    return files


def _refuse_existing(files: RequestFiles) -> None:
    for path in (files.key, files.csr, files.profile):
        if path.exists():
            raise CredentialFileError(
                f"{path} exists; a request never replaces a key or its files: choose another "
                "--out folder, or remove the old files if you are sure they are not needed"
            )


def _read_root(path: Path) -> bytes:
    try:
        data = path.read_bytes()
        cert_from_pem(data)
    except (OSError, CertificateError) as exc:
        raise CredentialFileError(f"--ca-cert {path}: {exc}") from exc
    return data


def _profile_toml(name: str, facility_id: str, broker: str, files: RequestFiles) -> str:
    when = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    return (
        f"# Client profile for {name} at facility {facility_id}, requested {when}.\n"
        f"# Usable once the operator's certificate is saved as {files.cert.name} here.\n"
        f"broker = {json.dumps(broker)}\n"
        f"ca_cert = {json.dumps(files.ca_cert.name)}\n"
        f"cert = {json.dumps(files.cert.name)}\n"
        f"key = {json.dumps(files.key.name)}\n"
    )
