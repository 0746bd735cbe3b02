"""One call from broker settings to a finished `Report`: open the store, read, build, close."""

from __future__ import annotations

from attestation.keys import VerifyKey
from attestation.pki import CertificateError, cert_from_pem
from broker.access.facility import FacilityError, load_facility
from broker.report.build import Settings, build_report
from broker.report.model import Report
from broker.report.reasons import RuleReasons
from broker.report.source import read_facts
from broker.settings import BrokerSettings
from broker.store import BrokerStore, StoreError, open_store, sqlite_path


class ReportError(Exception):
    """The report cannot be made (settings, certificate or store unusable)."""


def collect(
    settings: BrokerSettings,
    *,
    since: float,
    until: float,
    min_count: int,
    generated_at: float | None = None,
) -> Report:
    if since >= until:
        raise ReportError("the period is empty: --since must be before --until")
    if min_count < 1:
        raise ReportError("--min-count must be 1 or more")
    key = _broker_key(settings)
    facility, tiers, facility_note = _facility(settings)
    reasons = RuleReasons.load(settings.policies)
    store = _open(settings.store)
    try:
        facts = read_facts(store, key, since, until)
    except StoreError as exc:
        raise ReportError(str(exc)) from exc
    finally:
        store.close()
    return build_report(
        facts,
        reasons,
        Settings(
            facility=facility,
            store=_store_kind(settings.store),
            min_count=min_count,
            tiers=tiers,
            generated_at=generated_at,
            notes=(facility_note,) if facility_note else (),
        ),
    )


def _broker_key(settings: BrokerSettings) -> VerifyKey:
    """The broker certificate's key, which signs the audit checkpoints the report relies on."""
    try:
        cert = cert_from_pem(settings.server_cert.read_bytes())
    except (OSError, CertificateError, ValueError) as exc:
        raise ReportError(
            f"cannot read the broker certificate {settings.server_cert} needed to verify the "
            f"audit log: {exc}"
        ) from exc
    return VerifyKey.from_cryptography(cert.public_key())


def _facility(settings: BrokerSettings) -> tuple[str, tuple[str, ...], str]:
    """The facility's name and tiers (lowest first); the report still runs without them."""
    try:
        facility = load_facility(settings.facility)
    except (FacilityError, OSError, ValueError) as exc:
        return "qtestbed facility", (), f"The facility file could not be read ({exc})."
    return facility.name, facility.tiers, ""


def _store_kind(url: str) -> str:
    return "postgresql" if url.startswith(("postgresql://", "postgres://")) else "sqlite"


def _open(url: str) -> BrokerStore:
    if _store_kind(url) == "sqlite":
        # Opening a missing SQLite file would create an empty store and report nothing.
        try:
            path = sqlite_path(url)
        except ValueError as exc:
            raise ReportError(str(exc)) from exc
        if not path.is_file():
            raise ReportError(f"no SQLite store at {path}")
    try:
        return open_store(url)
    except (StoreError, ValueError) as exc:
        raise ReportError(str(exc)) from exc
