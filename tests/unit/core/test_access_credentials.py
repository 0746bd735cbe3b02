"""Client credentials: recorded from the issuing CA's certificates only, revoked for good by
serial (recorded or not), the revocation seen at once by the edge's check, and audited."""

from __future__ import annotations

import datetime as dt

import pytest

from attestation.keys import KeyKind, SigningKey
from attestation.pki import cert_to_pem, create_ca, issue_certificate
from broker.access.model import RecordKind
from broker.errors import BrokerError, ErrorCode
from qtestbed.shared.identity import principal_uri
from tests.unit.core.harness import Core, events


def _certificate(core: Core, name: str = "alice", *, own_ca: bool = True) -> bytes:
    key = SigningKey.generate(KeyKind.ECDSA_P256)
    ca_key, ca = core.ca_key, core.ca
    if not own_ca:
        ca_key = SigningKey.generate(KeyKind.ECDSA_P256)
        ca = create_ca("stranger", ca_key, now=core._now_dt(), days=30)
    cert = issue_certificate(
        ca_key=ca_key,
        ca_cert=ca,
        subject_cn=name,
        public_key=key.public_key,
        now=dt.datetime.fromtimestamp(core.clock.now() - 60, dt.UTC),
        days=7,
        client=True,
        uris=[principal_uri("facility", name)],
    )
    return cert_to_pem(cert)


async def test_a_recorded_credential_names_its_principal_and_is_audited(core: Core) -> None:
    book = core.parts.registries.credentials
    recorded = await book.record("olivia", _certificate(core))
    assert recorded.principal == "alice"
    assert not recorded.revoked
    assert recorded.recorded_by == "olivia"
    assert book.list("alice") == [recorded]
    assert await book.record("olivia", _certificate(core)) != recorded  # another certificate
    [event, _] = events(core, "access.credential.recorded")
    assert (event.actor, event.subject) == ("olivia", recorded.serial)


@pytest.mark.parametrize(
    ("name", "own_ca", "words"),
    [("alice", False, "not a credential of this facility"), ("mallory", True, "no principal")],
)
async def test_only_this_facilitys_credentials_of_its_principals_are_recorded(
    core: Core, name: str, own_ca: bool, words: str
) -> None:
    with pytest.raises(BrokerError) as refused:
        await core.parts.registries.credentials.record(
            "olivia", _certificate(core, name, own_ca=own_ca)
        )
    assert refused.value.code is ErrorCode.INVALID_ARGUMENT
    assert words in refused.value.detail
    assert events(core, "access.credential.recorded") == []


async def test_a_revocation_is_for_good_and_seen_at_once(core: Core) -> None:
    book = core.parts.registries.credentials
    recorded = await book.record("olivia", _certificate(core))
    assert not await book.revoked(recorded.serial)
    revoked = await book.revoke("sam", recorded.serial.upper(), "laptop stolen")
    assert revoked.revoked
    assert (revoked.revoked_by, revoked.revocation_reason) == ("sam", "laptop stolen")
    assert await book.revoked(recorded.serial)
    assert recorded.serial in book.revoked_serials()
    again = await book.revoke("olivia", recorded.serial, "again")
    assert again == revoked  # revoking twice changes nothing
    assert len(events(core, "access.credential.revoked")) == 1


async def test_a_serial_never_recorded_can_still_be_revoked(core: Core) -> None:
    book = core.parts.registries.credentials
    revoked = await book.revoke("sam", "0xABCDEF", "issued offline, then lost")
    assert (revoked.serial, revoked.principal, revoked.revoked) == ("abcdef", "", True)
    assert await book.revoked("abcdef")


async def test_a_revocation_needs_a_reason(core: Core) -> None:
    with pytest.raises(BrokerError) as refused:
        await core.parts.registries.credentials.revoke("sam", "ab", "")
    assert refused.value.code is ErrorCode.INVALID_ARGUMENT


@pytest.mark.parametrize("serial", ["zz", "12:xy", "a" * 41, ""])
async def test_a_revocation_of_something_that_is_no_serial_is_invalid(
    core: Core, serial: str
) -> None:
    book = core.parts.registries.credentials
    with pytest.raises(BrokerError) as refused:
        await book.revoke("sam", serial, "typo")
    assert refused.value.code is ErrorCode.INVALID_ARGUMENT
    assert not events(core, "access.credential.revoked")


async def test_an_open_stream_of_a_revoked_credential_is_ended(core: Core) -> None:
    book = core.parts.registries.credentials
    streams = core.parts.registries.streams
    recorded = await book.record("olivia", _certificate(core))
    ticket = streams.open(recorded.serial)
    other = streams.open("beef")
    await book.revoke("sam", recorded.serial, "stolen")
    assert ticket.ended.is_set()
    assert not other.ended.is_set()


async def test_an_unreadable_credential_record_counts_as_revoked_where_replicas_read_the_store(
    core: Core,
) -> None:
    from broker.access.model import AccessRecord
    from broker.audit.model import AuditEvent

    record = AccessRecord(
        kind=RecordKind.CREDENTIAL,
        name="ab",
        doc={"revoked_at": "not a time"},
        version=1,
        updated_at=0.0,
        updated_by="dba",
    )
    event = AuditEvent(kind="dba.edit", actor="dba", subject="ab", at=0.0)
    core.store.put_access(record, expected_version=None, event=event)
    core.store.replicated = True  # as PostgreSQL would answer
    assert await core.parts.registries.credentials.revoked("ab")
