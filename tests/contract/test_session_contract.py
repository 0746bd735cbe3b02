"""The sessions part of the store contract; every test runs against SQLite,
PostgreSQL and the memory store (see conftest.py)."""

from __future__ import annotations

import dataclasses
import threading
from typing import TYPE_CHECKING

import pytest

from broker.audit.chain import verify_chain
from broker.audit.model import AuditEvent
from broker.jobs.session_model import Session, SessionState
from broker.store.base import BrokerStore
from tests.contract.test_store_contract import T0

if TYPE_CHECKING:
    from tests.contract.conftest import Backend


def event(kind: str, subject: str) -> AuditEvent:
    return AuditEvent(kind=kind, actor="alice", subject=subject, at=T0, detail={})


def session(session_id: str, device: str = "dev-a", owner: str = "alice") -> Session:
    return Session(
        session_id=session_id,
        owner=owner,
        device_id=device,
        project="p",
        state=SessionState.OPEN,
        opened_at=T0,
        last_activity_at=T0 + 0.25,
        closes_at=T0 + 3600,
        idle_timeout_seconds=300.0,
    )


def test_a_read_for_an_owner_answers_someone_elses_session_exactly_like_a_missing_one(
    store: BrokerStore,
) -> None:
    mine = session("s1")
    assert store.insert_session(mine, event("session.opened", "s1"))
    assert store.get_session("s1", owner="alice") == mine
    assert store.get_session("s1", owner="bob") is None
    assert store.get_session("s-missing", owner="bob") is None
    assert store.get_session("s1", owner=None) == mine  # operators read any session


def test_one_open_session_per_device_and_compare_and_set_close(store: BrokerStore) -> None:
    first = session("s1")
    assert store.insert_session(first, event("session.opened", "s1"))
    assert not store.insert_session(session("s2"), event("session.opened", "s2"))
    assert store.insert_session(session("s3", device="dev-b"), event("session.opened", "s3"))
    assert store.get_session("s1") == first
    assert store.get_session("s2") is None
    # A session id is taken once, whatever the device.
    assert not store.insert_session(session("s1", device="dev-c"), event("session.opened", "s1"))
    assert store.get_session("s1") == first

    closed = dataclasses.replace(
        first, state=SessionState.CLOSED, closed_reason="idle", closed_at=T0 + 400, version=2
    )
    assert store.save_session(closed, expected_version=1, event=event("session.closed", "s1"))
    stale = dataclasses.replace(closed, closed_reason="lost update", version=2)
    assert not store.save_session(stale, expected_version=1)
    with pytest.raises(ValueError, match="version"):
        store.save_session(closed, expected_version=2)
    assert store.get_session("s1") == closed
    # The device is free again.
    assert store.insert_session(session("s4"), event("session.opened", "s4"))

    assert [s.session_id for s in store.list_sessions()] == ["s3", "s4"]
    listed = store.list_sessions(device_id="dev-a", include_closed=True)
    assert {s.session_id for s in listed} == {"s1", "s4"}
    assert store.list_sessions(owner="bob") == []
    kinds = [e.event.kind for e in store.audit_entries()]
    assert kinds == ["session.opened", "session.opened", "session.closed", "session.opened"]
    assert verify_chain(store.audit_entries()) is None


def test_two_writers_cannot_both_open_a_session_on_one_device(backend: Backend) -> None:
    stores = [backend.open(), backend.open()]
    stores[0].migrate()
    won: list[bool] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def open_one(target: BrokerStore, name: str) -> None:
        try:
            barrier.wait(5)
            won.append(target.insert_session(session(name), event("session.opened", name)))
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=open_one, args=(s, f"s{n}")) for n, s in enumerate(stores)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(won) == [False, True]
    assert len(stores[1].list_sessions(device_id="dev-a")) == 1
