"""The driver link knows a connection by its proved link key (authorised for one device) and its
route: a Hello for another device, a key arriving on another key's route, a Hello flood and a
key past its connection limit are refused and counted, and state never passes between
connections. Lease messages a connection has no right to send change nothing and are counted."""

from __future__ import annotations

from broker.jobs.model import JobState
from broker.link import messages as m
from broker.link.fake import make_peer, reconnect
from tests.unit.core.harness import (
    Core,
    attested,
    connection,
    events,
    job_of,
    metric,
    only,
    queued,
    start_ticks,
)


def _refusals(core: Core, reason: str) -> float:
    return metric(core, "qtestbed_link_refusals_total", reason=reason)


async def test_a_hello_for_another_device_than_the_key_is_for_is_refused(core: Core) -> None:
    await core.register("dev-open")
    await core.register("dev-restricted", tier="restricted")
    restricted_key, _ = make_peer("dev-restricted")
    rogue = core.driver("dev-open", peer=restricted_key)  # says it is dev-open
    await rogue.hello()
    [goodbye] = only(rogue.heard(), m.Goodbye)
    assert goodbye.code is m.GoodbyeCode.WRONG_KEY
    assert "dev-restricted" in goodbye.reason
    assert core.parts.jobs.fleet.get(rogue.peer) is None
    assert _refusals(core, "wrong_key") == 1


async def test_a_key_on_another_keys_route_inherits_nothing(core: Core) -> None:
    driver = await attested(core, "dev-open")
    await core.register("dev-restricted", tier="restricted")
    job_id = await queued(core)
    await core.pump()
    assert driver.grants()
    # Another device's key arrives on the attested connection's routing id.
    thief_peer, _ = make_peer("dev-restricted", route=driver.peer.route)
    thief = core.driver("dev-restricted", peer=thief_peer)
    await thief.say(m.Heartbeat(seq=1))
    [goodbye] = only(thief.heard(), m.Goodbye)
    assert goodbye.code is m.GoodbyeCode.WRONG_KEY
    assert _refusals(core, "route_taken") == 1
    # The old connection is gone (its route is someone else's now), its job back in the queue.
    assert core.parts.jobs.fleet.get(driver.peer) is None
    assert core.parts.jobs.fleet.get(thief.peer) is None
    job = await job_of(core, job_id)
    assert job.state is JobState.QUEUED
    await core.pump()
    assert thief.grants() == []


async def test_a_new_connection_of_the_same_key_on_the_same_route_inherits_nothing(
    core: Core,
) -> None:
    driver = await attested(core, "dev-open")
    job_id = await queued(core)
    await core.pump()
    assert driver.grants()
    again = core.driver("dev-open", peer=reconnect(driver.peer))  # same key, same routing id
    await again.say(m.Heartbeat(seq=1))
    [goodbye] = only(again.heard(), m.Goodbye)
    assert goodbye.code is m.GoodbyeCode.HELLO_FIRST  # it must say Hello and attest afresh
    assert core.parts.jobs.fleet.get(driver.peer) is None  # the old connection is gone
    assert (await job_of(core, job_id)).state is JobState.QUEUED
    assert _refusals(core, "route_taken") == 0  # its own key: a reconnect, not a takeover
    await again.hello()
    await core.pump()
    assert again.grants() == []  # not attested yet: nothing of the old connection's state


async def test_a_hello_flood_spends_only_its_own_keys_allowance(core: Core) -> None:
    burst = core.parts.base.settings.timing.hello_burst
    await core.register("dev-restricted", tier="restricted")
    flooder = core.driver("dev-restricted")
    for _ in range(burst + 30):
        await flooder.hello()
    goodbyes = only(flooder.heard(), m.Goodbye)
    assert {g.code for g in goodbyes} == {m.GoodbyeCode.TOO_MANY_HELLOS}
    assert _refusals(core, "hello_rate") == 30
    driver = await attested(core, "dev-open")  # another key: unaffected
    assert connection(driver).dispatchable(core.clock.now())
    core.clock.advance(core.parts.base.settings.timing.hello_every_seconds)
    assert (await flooder.attest()).affirming  # the allowance refills with time


async def test_a_key_holds_at_most_its_connection_limit(core: Core) -> None:
    limit = core.parts.base.settings.timing.connections_per_key
    await core.register("dev-open")
    first, _ = make_peer("dev-open")
    drivers = [
        core.driver(peer=reconnect(first, route=bytes([n + 1]) * 5)) for n in range(limit + 1)
    ]
    for driver in drivers:
        await driver.hello()
    *admitted, extra = drivers
    assert all(connection(d) for d in admitted)
    [goodbye] = only(extra.heard(), m.Goodbye)
    assert goodbye.code is m.GoodbyeCode.TOO_MANY_CONNECTIONS
    assert _refusals(core, "too_many_connections") == 1


async def test_lease_messages_without_the_right_are_counted_and_change_nothing(
    core: Core,
) -> None:
    driver = await attested(core)
    job_id = await queued(core)
    await core.pump()
    [grant] = driver.grants()
    counts = {"00": grant.shots}

    def result(lease_id: str, job: str) -> m.LeaseResult:
        return m.LeaseResult(
            lease_id=lease_id,
            job_id=job,
            counts=counts,
            execution_seconds=0.01,
            receipt=driver.receipt(grant, counts),
        )

    await driver.say(result("not-a-lease", job_id))
    assert _refusals(core, "lease_not_held") == 1
    await driver.say(result(grant.lease_id, "another-job"))
    assert _refusals(core, "wrong_job") == 1
    assert list(connection(driver).leases) == [grant.lease_id]  # the lease stands
    await driver.finish(grant)
    assert (await job_of(core, job_id)).state is JobState.COMPLETED
    await driver.say(result(grant.lease_id, job_id))
    assert _refusals(core, "duplicate_result") == 1
    assert len(events(core, "job.completed")) == 1


async def test_link_refusals_are_audited_once_per_reason_and_device_per_window(
    core: Core,
) -> None:
    await start_ticks(core)
    driver = await attested(core)
    for _ in range(1000):
        await driver.say(m.LeaseStarted(lease_id="not-a-lease", job_id="j"))
    core.link.refuse("malformed_frame", 1000)
    hub = core.parts.link.hub
    await hub.tick()
    assert _refusals(core, "malformed_frame") == 1000
    assert _refusals(core, "lease_not_held") == 1000
    assert events(core, "link.refused") == []  # the window has not run its length
    core.clock.advance(core.parts.base.settings.timing.link_refusal_audit_seconds + 1)
    await hub.tick()
    audited = events(core, "link.refused")
    assert sorted((e.subject, e.detail["reason"], e.detail["count"]) for e in audited) == [
        ("", "malformed_frame", 1000),
        ("dev-open", "lease_not_held", 1000),
    ]


async def test_a_hello_without_a_usable_grant_key_is_refused_counted_and_audited(
    core: Core,
) -> None:
    await start_ticks(core)
    await core.register("dev-open")
    # None, too short, and the all-zero point (a low-order key: nothing sealed to it is secret).
    bad_keys = [b"", b"\x01" * 31, bytes(32)]
    for bad in bad_keys:
        driver = core.driver("dev-open")
        await driver.hello(grant_key=bad)
        [goodbye] = only(driver.heard(), m.Goodbye)
        assert goodbye.code is m.GoodbyeCode.NO_GRANT_KEY
        assert "grant key" in goodbye.reason
        assert "upgrade the driver" in goodbye.reason
        assert core.parts.jobs.fleet.get(driver.peer) is None  # no connection, no challenge
    assert _refusals(core, "hello_without_grant_key") == len(bad_keys)
    core.clock.advance(core.parts.base.settings.timing.link_refusal_audit_seconds + 1)
    await core.parts.link.hub.tick()
    [entry] = events(core, "link.refused")
    assert (entry.subject, entry.detail["reason"], entry.detail["count"]) == (
        "dev-open",
        "hello_without_grant_key",
        len(bad_keys),
    )


async def test_grants_are_addressed_to_the_connections_own_grant_key(core: Core) -> None:
    driver = await attested(core, "dev-open")
    await queued(core)
    await core.pump()
    [grant] = driver.grants()
    assert grant.grant_key == driver.grant_key  # not the link key the connection proved
    assert grant.grant_key != driver.peer.public_key
    # The same key reconnecting on the same route is a new connection with its own grant key.
    again = core.driver("dev-open", peer=reconnect(driver.peer))
    assert again.grant_key != driver.grant_key
    assert (await again.attest()).affirming
    await core.pump()
    [regrant] = again.grants()  # the old connection's job, requeued, sealed to the new key
    assert regrant.grant_key == again.grant_key
