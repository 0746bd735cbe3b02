"""What `qtestbed facility upgrade` changes, computed in memory before anything is written:
the two issuing CAs under the root, every certificate the root signed directly re-issued from
the right one (same key, same end of validity at the latest), and the two settings lines.
"""

from __future__ import annotations

import datetime as dt
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from attestation.issuance import MAX_CLIENT_DAYS, issue_client_certificate
from attestation.keys import KeyKind, SigningKey, VerifyKey
from attestation.pki import cert_to_pem, create_intermediate, issue_certificate, serial_hex
from qtestbed.shared.identity import principal_uri

CA_DAYS = 3650


class UpgradeError(Exception):
    """The facility cannot be upgraded as it is; the message says why and what to do."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Ca:
    key: SigningKey
    cert: x509.Certificate


@dataclass(frozen=True, kw_only=True, slots=True)
class Reissued:
    """One certificate issued again: its file (relative to the facility), subject and serial."""

    path: str
    name: str
    serial: str
    not_after: str
    pem: bytes  # the new file: the certificate, then the issuing CA


def issuing_ca(root: Ca, name: str, usage: list[x509.ObjectIdentifier], when: dt.datetime) -> Ca:
    """An issuing CA below the root (path length 0), never outliving it."""
    days = min(CA_DAYS, (root.cert.not_valid_after_utc - when).days)
    if days < 1:
        raise UpgradeError("the facility root expires within a day; renew the root first")
    key = SigningKey.generate(KeyKind.ECDSA_P256)
    try:
        cert = create_intermediate(
            name,
            key,
            parent_key=root.key,
            parent_cert=root.cert,
            now=when,
            days=days,
            extended_key_usage=usage,
        )
    except ValueError as exc:
        raise UpgradeError(
            f"the facility root cannot sign the issuing CAs ({exc}); this facility cannot be "
            "upgraded in place: make a new one with 'qtestbed init'"
        ) from exc
    return Ca(key=key, cert=cert)


def client_ca(root: Ca, facility_id: str, when: dt.datetime) -> Ca:
    usage = [ExtendedKeyUsageOID.CLIENT_AUTH]
    return issuing_ca(root, f"qtestbed {facility_id} clients CA", usage, when)


def device_ca(root: Ca, facility_id: str, when: dt.datetime) -> Ca:
    return issuing_ca(root, f"qtestbed {facility_id} devices CA", [], when)


Issue = Callable[[x509.Certificate, int], x509.Certificate]


def reissue_folder(
    folder: Path, root: Ca, issuer: Ca, issue: Issue, when: dt.datetime
) -> tuple[list[Reissued], list[str]]:
    """Every *.pem in `folder` the root signed directly, issued again by `issuer`; and, for
    the files left alone, why."""
    done: list[Reissued] = []
    skipped: list[str] = []
    for path in sorted(folder.glob("*.pem")):
        label = f"{folder.name}/{path.name}"
        cert, why = _old_certificate(path, root, when)
        if cert is None:
            skipped.append(f"{label}: {why}")
            continue
        days = (cert.not_valid_after_utc - when).days
        new = issue(cert, days)
        done.append(
            Reissued(
                path=label,
                name=_common_name(cert),
                serial=serial_hex(new),
                not_after=new.not_valid_after_utc.isoformat(timespec="seconds"),
                pem=cert_to_pem(new) + cert_to_pem(issuer.cert),
            )
        )
    return done, skipped


def _old_certificate(
    path: Path, root: Ca, when: dt.datetime
) -> tuple[x509.Certificate | None, str]:
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        cert.verify_directly_issued_by(root.cert)
    except (OSError, ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return None, "not a certificate the facility root signed directly; left as it is"
    if not _common_name(cert):
        return None, "names no common name; left as it is"
    if (cert.not_valid_after_utc - when).days < 1:
        return None, (
            f"expires {cert.not_valid_after_utc.isoformat()}; issue a new one "
            "('qtestbed credential issue' or, for a device, from ca/devices-ca)"
        )
    return cert, ""


def _common_name(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


def user_issuer(clients: Ca, facility_id: str, when: dt.datetime) -> Issue:
    """Principals: named by the old certificate's CN, now in the URI, with clientAuth."""

    def issue(old: x509.Certificate, days: int) -> x509.Certificate:
        name = _common_name(old)
        return issue_client_certificate(
            ca_key=clients.key,
            ca_cert=clients.cert,
            public_key=VerifyKey.from_cryptography(old.public_key()),
            principal_uri=principal_uri(facility_id, name),
            common_name=name,
            now=when,
            days=max(1, min(days, MAX_CLIENT_DAYS)),
        )

    return issue


def device_issuer(devices: Ca, when: dt.datetime) -> Issue:
    """Devices: the same names (the urn:qtestbed:device URI) from the device-issuing CA."""

    def issue(old: x509.Certificate, days: int) -> x509.Certificate:
        try:
            san = old.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            uris = san.get_values_for_type(x509.UniformResourceIdentifier)
        except x509.ExtensionNotFound:
            uris = []
        return issue_certificate(
            ca_key=devices.key,
            ca_cert=devices.cert,
            subject_cn=_common_name(old),
            public_key=VerifyKey.from_cryptography(old.public_key()),
            now=when,
            days=max(1, days),
            uris=uris,
        )

    return issue


_FACILITY_TABLE = re.compile(r"^\s*\[\s*facility\s*\]\s*(#.*)?$")
_ANY_TABLE = re.compile(r"^\s*\[")
_CA_CERT = re.compile(r"^\s*ca_cert\s*=")


def with_facility_id(text: str, facility_id: str) -> str:
    """facility.toml with `id` in its [facility] table."""
    lines = text.splitlines(keepends=True)
    at = next((i for i, line in enumerate(lines) if _FACILITY_TABLE.match(line)), None)
    if at is None:
        raise UpgradeError("facility.toml has no [facility] table; add one (see the README)")
    line = f'id = "{facility_id}"  # names principals: qtestbed://{facility_id}/principal/NAME\n'
    new = "".join([*lines[: at + 1], line, *lines[at + 1 :]])
    _check_parsed(new, "facility.toml", lambda doc: doc["facility"]["id"] == facility_id)
    return new


def with_client_ca(text: str, relative: str) -> str:
    """broker.toml with `client_ca_cert`, a top-level key (so before the first table)."""
    lines = text.splitlines(keepends=True)
    at = next((i for i, line in enumerate(lines) if _ANY_TABLE.match(line)), len(lines))
    # Beside the root's certificate when it is named before any table, else before the tables.
    at = next((i + 1 for i, line in enumerate(lines[:at]) if _CA_CERT.match(line)), at)
    added = [
        "# Principals' certificates must come from this CA; the broker needs no CA key.\n",
        f'client_ca_cert = "{relative}"\n',
    ]
    if at and not lines[at - 1].endswith("\n"):
        lines[at - 1] += "\n"
    new = "".join([*lines[:at], *added, *lines[at:]])
    _check_parsed(new, "broker.toml", lambda doc: doc["client_ca_cert"] == relative)
    return new


def _check_parsed(text: str, name: str, holds: Callable[[dict[str, Any]], object]) -> None:
    try:
        good = bool(holds(tomllib.loads(text)))
    except (tomllib.TOMLDecodeError, KeyError, TypeError) as exc:
        raise UpgradeError(f"could not add the new setting to {name}: {exc}") from exc
    if not good:
        raise UpgradeError(f"could not add the new setting to {name}; edit it by hand")
