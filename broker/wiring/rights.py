"""The dispatch rights this broker works with (`broker.link.rights`): through the store where
the store is shared PostgreSQL, all its own otherwise."""

from __future__ import annotations

from broker.devices.registry import DeviceRegistry
from broker.link.rights import DispatchRights, SoleRights
from broker.store import is_postgres_url
from broker.wiring.parts import Foundation


def dispatch_rights(base: Foundation, devices: DeviceRegistry) -> DispatchRights:
    if not is_postgres_url(base.settings.store):
        return SoleRights()  # and psycopg is never imported
    from broker.store.pg_rights import PgDispatchRights
    from broker.store.postgres import PostgresStore

    store = base.runner.store
    if not isinstance(store, PostgresStore):
        return SoleRights()
    return PgDispatchRights(store, lambda: (d.device_id for d in devices.all()))
