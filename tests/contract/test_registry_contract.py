"""The `RegistryStore` contract; every test runs against SQLite, PostgreSQL and the memory store
(see conftest.py). The tests that reach into a database with SQL are in
test_sql_store_contract.py."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

from attestation.calibration import CalibrationWindows, Tolerance
from broker.audit.chain import verify_chain
from broker.audit.model import AuditEvent, Checkpoint
from broker.devices.model import (
    AttestationRecord,
    DeviceRecord,
    DeviceStatus,
    ReferenceScope,
    ReferenceValuesRecord,
    Revocation,
)
from broker.store import StoreError
from broker.store.base import BrokerStore

if TYPE_CHECKING:
    from tests.contract.conftest import Backend

T0 = 1_760_000_000.123456  # fractional epoch seconds must survive the round trip exactly
CHAIN_PEM = b"-----BEGIN CERTIFICATE-----\nMIIB\xff\x00\n-----END CERTIFICATE-----\n"


def event(kind: str, subject: str, **detail: Any) -> AuditEvent:
    return AuditEvent(kind=kind, actor="operator", subject=subject, at=T0 + 0.5, detail=detail)


def make_device(device_id: str, **changes: Any) -> DeviceRecord:
    record = DeviceRecord(
        device_id=device_id,
        tier="tier-2",
        model="ibmq-5",
        certificate_chain_pem=CHAIN_PEM + device_id.encode(),
        fingerprint="fe" * 32,
        serial=f"0a1b{len(device_id):02x}",
        status=DeviceStatus.ACTIVE,
        status_reason="registered",
        status_changed_at=T0,
        registered_at=T0,
        registered_by="operator",
    )
    return dataclasses.replace(record, **changes)


def make_reference(scope: ReferenceScope, scope_id: str, **changes: Any) -> ReferenceValuesRecord:
    record = ReferenceValuesRecord(
        scope=scope,
        scope_id=scope_id,
        version=0,  # the store numbers versions; whatever is passed here is ignored
        firmware=frozenset({"fw-2.1", "fw-2.0"}),
        control_software=frozenset({"ctl-9"}),
        driver_build=frozenset({"sha256:" + "d" * 64, "sha256:" + "c" * 64}),
        calibration_digest=frozenset({"e" * 64}),
        num_qubits=5,
        not_before=None,
        not_after=None,
        created_at=T0,
        created_by="operator",
    )
    return dataclasses.replace(record, **changes)


def make_revocation(serial: str, *, at: float = T0) -> Revocation:
    return Revocation(
        serial=serial, device_id="dev-a", revoked_at=at, revoked_by="secops", reason="key leaked"
    )


def make_attestation(device_id: str, at: float, **changes: Any) -> AttestationRecord:
    record = AttestationRecord(
        device_id=device_id,
        at=at,
        status="AFFIRMING",
        reasons=(),
        evidence_digest="ab" * 32,
        evidence=b'{"payloadType":"application/vnd.qtestbed"}\x00\xff',
        expires_at=at + 300.5,
    )
    return dataclasses.replace(record, **changes)


def make_checkpoint(tree_size: int) -> Checkpoint:
    return Checkpoint(
        tree_size=tree_size,
        root_hash=f"{tree_size:064x}",
        at=T0 + tree_size,
        key_id="broker-key-1",
        envelope=b'{"signatures":[]}\x00' + bytes([tree_size % 256]),
    )


def register(store: BrokerStore, device_id: str, **changes: Any) -> DeviceRecord:
    record = make_device(device_id, **changes)
    assert store.save_device(
        record, expected_version=None, event=event("device.registered", device_id)
    )
    return record


def test_every_device_field_round_trips(store: BrokerStore) -> None:
    quarantined = make_device(
        "dev-b",
        status=DeviceStatus.QUARANTINED,
        status_reason="calibration digest not in reference values",
        status_changed_at=T0 + 12.000001,
        version=3,
    )
    active = make_device("dev-a", tier="tier-1", model="ibmq-27")
    for record in (quarantined, active):
        assert store.save_device(record, expected_version=None, event=event("d", "x"))
        assert store.get_device(record.device_id) == record
    assert store.list_devices() == [active, quarantined]  # by device id
    assert store.get_device("dev-missing") is None


def test_device_insert_conflict_writes_nothing(store: BrokerStore) -> None:
    first = register(store, "dev-a")
    entries = store.audit_entries()
    rival = make_device("dev-a", tier="tier-9", fingerprint="00" * 32)
    assert not store.save_device(rival, expected_version=None, event=event("d", "dev-a"))
    assert store.get_device("dev-a") == first
    assert store.audit_entries() == entries


def test_device_compare_and_set(store: BrokerStore) -> None:
    registered = register(store, "dev-a")
    quarantined = dataclasses.replace(
        registered,
        status=DeviceStatus.QUARANTINED,
        status_reason="appraisal failed",
        status_changed_at=T0 + 5,
        version=registered.version + 1,
    )
    assert store.save_device(
        quarantined, expected_version=registered.version, event=event("device.quarantined", "a")
    )
    assert store.get_device("dev-a") == quarantined
    entries = store.audit_entries()
    assert entries[-1].event.kind == "device.quarantined"

    # A writer still holding the registered copy loses, and leaves no trace.
    stale = dataclasses.replace(registered, status=DeviceStatus.REVOKED, version=2)
    assert not store.save_device(
        stale, expected_version=registered.version, event=event("device.revoked", "dev-a")
    )
    assert store.get_device("dev-a") == quarantined
    assert store.audit_entries() == entries
    unknown = make_device("dev-nope", version=2)
    assert not store.save_device(unknown, expected_version=1, event=event("x", "dev-nope"))
    assert store.get_device("dev-nope") is None
    assert store.audit_entries() == entries


def test_device_update_must_bump_the_version(store: BrokerStore) -> None:
    registered = register(store, "dev-a")
    entries = store.audit_entries()
    same = dataclasses.replace(registered, status_reason="edited in place")
    with pytest.raises(ValueError, match="version"):
        store.save_device(same, expected_version=registered.version, event=event("x", "dev-a"))
    assert store.get_device("dev-a") == registered
    assert store.audit_entries() == entries


def test_every_reference_field_round_trips(store: BrokerStore) -> None:
    windowed = make_reference(
        ReferenceScope.MODEL,
        "ibmq-5",
        firmware=frozenset({"fw-b", "fw-a", "fw-c"}),
        num_qubits=27,
        not_before=T0 - 0.25,
        not_after=T0 + 86_400.5,
        created_by="secops",
        calibration=CalibrationWindows(
            two_qubit_error=Tolerance(minimum=1e-5, maximum=2.5e-3),
            readout_error=Tolerance(maximum=0.05),
            t1_us=Tolerance(minimum=12.5),
        ),
    )
    stored = store.add_reference_values(windowed, event("reference.added", "ibmq-5"))
    assert stored == dataclasses.replace(windowed, version=1)
    open_ended = make_reference(ReferenceScope.DEVICE, "dev-a", version=42)
    assert store.add_reference_values(open_ended, event("reference.added", "dev-a")).version == 1
    assert store.reference_values(ReferenceScope.MODEL, "ibmq-5") == [stored]
    assert store.reference_values(ReferenceScope.DEVICE, "dev-a") == [
        dataclasses.replace(open_ended, version=1)
    ]


def test_reference_versions_count_per_scope_newest_first(store: BrokerStore) -> None:
    device, model = ReferenceScope.DEVICE, ReferenceScope.MODEL
    # The same id under both scopes, and a second id, must each count from 1 on their own.
    writes = [(model, "m"), (device, "m"), (model, "m"), (device, "other"), (model, "m")]
    returned = [
        store.add_reference_values(
            make_reference(scope, scope_id, num_qubits=n), event("ref", scope_id)
        ).version
        for n, (scope, scope_id) in enumerate(writes)
    ]
    assert returned == [1, 1, 2, 1, 3]
    model_m = store.reference_values(model, "m")
    assert [(r.version, r.num_qubits) for r in model_m] == [(3, 4), (2, 2), (1, 0)]
    assert [r.version for r in store.reference_values(device, "m")] == [1]
    assert [r.version for r in store.reference_values(device, "other")] == [1]
    assert store.reference_values(device, "none") == []


def test_reference_versions_from_two_connections_never_collide(backend: Backend) -> None:
    stores = [backend.open(), backend.open()]
    stores[0].migrate()
    errors: list[BaseException] = []
    versions: list[int] = []

    def add_many(target: BrokerStore, name: str) -> None:
        try:
            for i in range(20):
                record = make_reference(ReferenceScope.MODEL, "shared", created_by=f"{name}-{i}")
                versions.append(target.add_reference_values(record, event("ref", name)).version)
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=add_many, args=(s, f"t{n}")) for n, s in enumerate(stores)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(versions) == list(range(1, 41))
    stored = stores[1].reference_values(ReferenceScope.MODEL, "shared")
    assert [r.version for r in stored] == list(range(40, 0, -1))
    entries = stores[0].audit_entries()
    assert len(entries) == 40
    assert verify_chain(entries) is None


def test_revocations_round_trip_oldest_first(store: BrokerStore) -> None:
    later, earlier = make_revocation("0b", at=T0 + 7.5), make_revocation("0a", at=T0)
    for revocation in (later, earlier):
        assert store.add_revocation(revocation, event("device.revoked", revocation.serial))
    assert store.revocations() == [earlier, later]


def test_duplicate_revocation_returns_false_and_writes_nothing(store: BrokerStore) -> None:
    first = make_revocation("0a")
    assert store.add_revocation(first, event("device.revoked", "0a"))
    entries = store.audit_entries()
    again = dataclasses.replace(first, revoked_by="someone else", revoked_at=T0 + 1)
    assert not store.add_revocation(again, event("device.revoked", "0a"))
    assert store.revocations() == [first]
    assert store.audit_entries() == entries


def test_attestation_history_newest_first_with_limit(store: BrokerStore) -> None:
    failing = make_attestation(
        "dev-a", T0 + 2, status="CONTRAINDICATED", reasons=("nonce.stale", "firmware.unknown")
    )
    records = [make_attestation("dev-a", T0), failing, make_attestation("dev-a", T0 + 1)]
    for record in [*records, make_attestation("dev-b", T0 + 9)]:
        store.add_attestation(record, event("attestation.appraised", record.device_id))
    history = store.attestation_history("dev-a")
    assert history == [records[1], records[2], records[0]]
    assert history[0].reasons == ("nonce.stale", "firmware.unknown")  # order kept, not sorted
    assert store.attestation_history("dev-a", limit=2) == [records[1], records[2]]
    assert store.attestation_history("dev-a", limit=0) == []
    assert [r.device_id for r in store.attestation_history("dev-b")] == ["dev-b"]
    assert store.attestation_history("dev-none") == []
    with pytest.raises(ValueError, match="limit"):
        store.attestation_history("dev-a", limit=-1)


def test_attestations_at_the_same_time_list_the_later_insert_first(store: BrokerStore) -> None:
    first, second = (make_attestation("dev-a", T0, evidence_digest=d * 64) for d in "12")
    for record in (first, second):
        store.add_attestation(record, event("attestation.appraised", "dev-a"))
    assert store.attestation_history("dev-a") == [second, first]


def test_checkpoints_grow_and_list_smallest_first(store: BrokerStore) -> None:
    for size in (3, 10, 4096):
        store.add_checkpoint(make_checkpoint(size))
    expected = [make_checkpoint(size) for size in (3, 10, 4096)]
    assert store.checkpoints() == expected
    for size in (4096, 11):  # equal to the latest, and smaller than it
        with pytest.raises(StoreError, match="only grow"):
            store.add_checkpoint(make_checkpoint(size))
    assert store.checkpoints() == expected
    assert store.audit_entries() == []  # a checkpoint is about the log, not an entry in it


def test_every_registry_write_is_audited_in_one_chain(store: BrokerStore) -> None:
    device = register(store, "dev-a")
    moved = dataclasses.replace(device, status=DeviceStatus.REVOKED, version=2)
    store.save_device(moved, expected_version=1, event=event("device.revoked", "dev-a"))
    store.add_reference_values(
        make_reference(ReferenceScope.MODEL, "ibmq-5"), event("reference.added", "ibmq-5", v=1)
    )
    store.add_revocation(make_revocation("0a"), event("revocation.added", "0a"))
    store.add_attestation(make_attestation("dev-a", T0), event("attestation.appraised", "dev-a"))
    store.append_audit(event("job.submitted", "j1"))
    entries = store.audit_entries()
    assert [(e.event.kind, e.event.subject) for e in entries] == [
        ("device.registered", "dev-a"),
        ("device.revoked", "dev-a"),
        ("reference.added", "ibmq-5"),
        ("revocation.added", "0a"),
        ("attestation.appraised", "dev-a"),
        ("job.submitted", "j1"),
    ]
    assert entries[2].event.detail == {"v": 1}
    assert verify_chain(entries) is None


_BAD_EVENT = AuditEvent(kind="x", actor="a", subject="s", at=T0, detail={"x": {1j}})
_WRITES: dict[str, Callable[[BrokerStore], object]] = {
    "insert_device": lambda s: s.save_device(
        make_device("dev-new"), expected_version=None, event=_BAD_EVENT
    ),
    "update_device": lambda s: s.save_device(
        make_device("dev-a", version=2, tier="tier-0"), expected_version=1, event=_BAD_EVENT
    ),
    "reference": lambda s: s.add_reference_values(
        make_reference(ReferenceScope.DEVICE, "dev-a"), _BAD_EVENT
    ),
    "revocation": lambda s: s.add_revocation(make_revocation("0a"), _BAD_EVENT),
    "attestation": lambda s: s.add_attestation(make_attestation("dev-a", T0), _BAD_EVENT),
}


@pytest.mark.parametrize("write", sorted(_WRITES))
def test_a_failed_audit_append_undoes_the_write(store: BrokerStore, write: str) -> None:
    register(store, "dev-a")

    def snapshot() -> tuple[object, ...]:
        return (
            store.list_devices(),
            store.reference_values(ReferenceScope.DEVICE, "dev-a"),
            store.revocations(),
            store.attestation_history("dev-a"),
            store.audit_entries(),
        )

    before = snapshot()
    with pytest.raises(TypeError):  # the event's detail cannot be serialized
        _WRITES[write](store)
    assert snapshot() == before


def test_registry_survives_close_and_reopen(backend: Backend, store: BrokerStore) -> None:
    device = register(store, "dev-a")
    reference = store.add_reference_values(
        make_reference(ReferenceScope.DEVICE, "dev-a", not_after=T0 + 1), event("ref", "dev-a")
    )
    store.add_revocation(make_revocation("0a"), event("revoked", "0a"))
    store.add_attestation(make_attestation("dev-a", T0), event("appraised", "dev-a"))
    store.add_checkpoint(make_checkpoint(4))
    entries = store.audit_entries()
    store.close()

    reopened = backend.open()
    reopened.migrate()
    assert reopened.list_devices() == [device]
    assert reopened.reference_values(ReferenceScope.DEVICE, "dev-a") == [reference]
    assert reopened.revocations() == [make_revocation("0a")]
    assert reopened.attestation_history("dev-a") == [make_attestation("dev-a", T0)]
    assert reopened.checkpoints() == [make_checkpoint(4)]
    assert reopened.audit_entries() == entries
    # Numbering and the monotonic rule carry on from what was stored before the restart.
    again = make_reference(ReferenceScope.DEVICE, "dev-a")
    assert reopened.add_reference_values(again, event("ref", "dev-a")).version == 2
    with pytest.raises(StoreError, match="only grow"):
        reopened.add_checkpoint(make_checkpoint(4))


def test_the_registry_fingerprint_moves_with_every_registry_write(store: BrokerStore) -> None:
    """What a replica compares to see that another changed a device, a revocation or a
    reference version; an attestation record is history, not registry state."""
    seen = [store.registry_fingerprint()]
    device = make_device("dev-a")
    assert store.save_device(device, expected_version=None, event=event("device.added", "dev-a"))
    seen.append(store.registry_fingerprint())
    quarantined = dataclasses.replace(device, status=DeviceStatus.QUARANTINED, version=2)
    store.save_device(quarantined, expected_version=1, event=event("device.quarantined", "dev-a"))
    seen.append(store.registry_fingerprint())
    store.add_revocation(make_revocation("0a"), event("certificate.revoked", "dev-a"))
    seen.append(store.registry_fingerprint())
    reference = make_reference(ReferenceScope.DEVICE, "dev-a")
    store.add_reference_values(reference, event("reference.added", "dev-a"))
    seen.append(store.registry_fingerprint())
    assert len(set(seen)) == len(seen)
