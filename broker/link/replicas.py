"""Which broker replica issued a lease, and whether that replica still runs.

A lease id is `<replica id>.<random>`: the replica that wrote it is the only one holding its
driver's connection, so only it can see the lease answered or its driver lost. When it dies
(its liveness lock in the store is free: `Store.replica_alive`) a survivor gives the job back
to the queue at once, without waiting for the lease to expire. Lease ids come only from the
store (written by a broker), never from a driver, so the prefix is not something a peer chose.
"""

from __future__ import annotations

import secrets
import uuid

from broker.store.runner import StoreRunner


class ReplicaRoster:
    def __init__(self, runner: StoreRunner, replica_id: str | None = None) -> None:
        self._runner = runner
        # New for every process: a restarted broker is a new replica, and the leases of the
        # one before it are recovered as a dead replica's.
        self.replica_id = replica_id or secrets.token_hex(8)

    def new_lease_id(self) -> str:
        return f"{self.replica_id}.{uuid.uuid4().hex}"

    @staticmethod
    def issuer(lease_id: str) -> str | None:
        """The replica that wrote the lease; None for lease ids written before replicas
        named themselves in them."""
        issuer, dot, _ = lease_id.partition(".")
        return issuer if dot and issuer else None

    async def alive(self, replica_id: str) -> bool:
        if replica_id == self.replica_id:
            return True
        return await self._runner.call(self._runner.store.replica_alive, replica_id)
