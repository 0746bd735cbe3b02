"""Client credentials the broker knows of: recorded when an operator issues one (the CA key is
not here), revoked by serial for good. Kept as access records, so a revocation reaches every
replica's snapshot, and is read from the store itself on every call where other replicas write
(the edge must refuse a revoked credential on its next call, whichever replica it reaches).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
from collections.abc import Callable

from cryptography import x509

from attestation.clients import ClientCertificateError, verify_client_certificate
from attestation.pki import normalize_serial
from broker.access.documents import credential_from_doc, credential_to_doc
from broker.access.facility import Facility
from broker.access.model import AccessError, Credential, RecordKind
from broker.access.records import AccessRecords
from broker.access.registry import AccessRegistry
from broker.clock import Clock
from broker.errors import BrokerError, ErrorCode, invalid, not_found
from broker.store.runner import StoreRunner
from qtestbed.shared.identity import principal_from_uri

# RFC 5280 4.1.2.2: a serial is at most 20 octets.
_MAX_SERIAL_DIGITS = 40


# A pure function of its arguments, asked on every call with the caller's certificate's URIs:
# kept for as many certificates as the edge keeps verified ones.
@functools.lru_cache(maxsize=4096)
def principal_named(uris: tuple[str, ...], facility_id: str) -> str | None:
    """The one principal the certificate's URI names at this facility (None: none, or two)."""
    names = {n for u in uris if (n := principal_from_uri(u, facility_id)) is not None}
    return next(iter(names)) if len(names) == 1 else None


class CredentialBook:
    def __init__(
        self,
        records: AccessRecords,
        *,
        runner: StoreRunner,
        clock: Clock,
        client_ca: x509.Certificate,
        facility: Callable[[], Facility],
        access: AccessRegistry,
    ) -> None:
        self._records = records
        self._runner = runner
        self._clock = clock
        self._client_ca = client_ca
        self._facility = facility
        self._access = access

    def revoked_serials(self) -> frozenset[str]:
        return frozenset(s for s, c in self._records.snapshot.credentials.items() if c.revoked)

    async def revoked(self, serial: str) -> bool:
        """Whether the serial is revoked now. Where replicas share the store, ask the store:
        a snapshot refreshed on the tick could still let one call through."""
        if not self._runner.store.replicated:
            return serial in self.revoked_serials()
        stored = await self._runner.call(
            self._runner.store.access_record, RecordKind.CREDENTIAL, serial
        )
        if stored is None:
            return False
        try:
            return credential_from_doc(serial, stored.doc).revoked
        except AccessError:
            return True  # unreadable: refuse rather than guess

    def list(self, principal: str = "") -> list[Credential]:
        found = self._records.snapshot.credentials.values()
        chosen = [c for c in found if not principal or c.principal == principal]
        return sorted(chosen, key=lambda c: (c.principal, c.not_before or 0.0, c.serial))

    async def record(self, caller: str, certificate_pem: bytes) -> Credential:
        """Record a certificate the operator issued; the same one again is a no-op."""
        now = self._clock.now()
        try:
            verified = verify_client_certificate(
                _leaf(certificate_pem), self._client_ca, now=dt.datetime.fromtimestamp(now, dt.UTC)
            )
        except ClientCertificateError as exc:
            raise invalid(f"not a credential of this facility: {exc}") from exc
        name = principal_named(verified.uris, self._facility().facility_id)
        if name is None or self._access.principal(name) is None:
            raise invalid(
                "the certificate names no principal of this facility (its URI must be "
                f"qtestbed://{self._facility().facility_id}/principal/NAME for a registered NAME)"
            )
        known = self._records.snapshot.credentials.get(verified.serial)
        if known is not None:
            if known.fingerprint != verified.fingerprint:
                raise BrokerError(
                    ErrorCode.ABORTED,
                    f"serial {verified.serial} names another "
                    "certificate on record; the CA must not reuse serials",
                )
            return known
        credential = Credential(
            serial=verified.serial,
            principal=name,
            fingerprint=verified.fingerprint,
            not_before=verified.not_before,
            not_after=verified.not_after,
            recorded_at=now,
            recorded_by=caller,
        )
        await self._put(caller, credential, 0, "recorded")
        return credential

    async def revoke(self, caller: str, serial: str, reason: str) -> Credential:
        """Revoke a serial for good (recorded or not); revoking again changes nothing."""
        serial = _serial(serial)
        if not reason:
            raise invalid("say why the credential is revoked (--reason)")
        known = self._records.snapshot.credentials.get(serial) or Credential(serial=serial)
        if known.revoked:
            return known
        revoked = dataclasses.replace(
            known, revoked_at=self._clock.now(), revoked_by=caller, revocation_reason=reason
        )
        version = self._records.version(RecordKind.CREDENTIAL, serial)
        await self._put(caller, revoked, version, "revoked", reason=reason)
        return revoked

    def get(self, serial: str) -> Credential:
        found = self._records.snapshot.credentials.get(serial)
        if found is None:
            raise not_found("credential", serial)
        return found

    async def _put(
        self, caller: str, credential: Credential, version: int, what: str, reason: str = ""
    ) -> None:
        detail: dict[str, object] = {"serial": credential.serial, "principal": credential.principal}
        if reason:
            detail["reason"] = reason
        await self._records.put(
            caller,
            RecordKind.CREDENTIAL,
            credential.serial,
            credential_to_doc(credential),
            version,
            event_kind=f"access.credential.{what}",
            detail=detail,
        )


def _serial(text: str) -> str:
    """A serial as certificates' serials are kept (lower-case hex), or INVALID_ARGUMENT."""
    serial = normalize_serial(text)
    digits = set(serial) <= set("0123456789abcdef")
    if not text.strip() or len(serial) > _MAX_SERIAL_DIGITS or not digits:
        raise invalid(
            f"serial {text[:60]!r} is not a certificate serial (hexadecimal, at most 20 bytes); "
            "give it as 'qtestbed credential list' prints it"
        )
    return serial


def _leaf(pem: bytes) -> bytes:
    """The first certificate of a PEM bundle (the leaf; intermediates after it are ignored)."""
    end = b"-----END CERTIFICATE-----"
    cut = pem.find(end)
    return pem[: cut + len(end)] + b"\n" if cut >= 0 else pem
