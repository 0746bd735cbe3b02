"""Hostile drivers on real sockets against a real broker: the link knows a connection by the
CurveZMQ key it proved (authorised for one device), never by its routing id.

- a host holding another device's authorised key that takes over an attested connection's
  routing id after the real driver dropped gets nothing: no readable lease, no attestation;
- a host holding the SAME device's link key that takes over the route of a real driver agent's
  attested connection (killed without a Goodbye) receives the lease grant meant for it and
  cannot open it (grants are sealed to the connection's own grant key); the job is requeued
  and a real driver runs it;
- a connection answering another connection's challenge is refused, and the challenged
  connection's own answer still works;
- a Hello flood from one key stops neither another device's driver nor the same device's real
  driver from attesting;
- every link refusal is a metric and an aggregated audit entry, and 1,000 garbage frames give a
  bounded number of log lines and one audit record while the broker keeps serving.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from collections.abc import Iterator
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import pytest
import zmq
from zmq.utils import z85

from attestation.receipts import ReceiptClaims, result_digest, sign_receipt
from drivers.grants import GrantError, GrantKey, open_grant
from qtestbed.cli.demo import ghz_qasm2
from qtestbed.shared.linkkeys import create_keypair, load_keypair
from qtestbed.testing import LocalFacility, eventually
from qtestbed.v1 import driver_link_pb2 as link_pb
from tests.integration.attester import Attester, LinkEndpoint, probe
from tests.integration.lab import DEVICE, Lab, reason_codes
from tests.integration.support import (
    AuditRow,
    audit_entries,
    last_audit_seq,
    metric_value,
    scrape,
    state_name,
    wait_state,
)

REFUSALS = "qtestbed_link_refusals_total"
AUDIT_WINDOW = 1.0  # link refusals audited once per reason and device per this many seconds


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    timing = {"link_refusal_audit_seconds": AUDIT_WINDOW}
    with LocalFacility(tmp_path / "facility", timing=timing) as facility:
        made = Lab(facility)
        try:
            yield made
        finally:
            made.close_attesters()


class Dealer:
    """A raw driver-link socket that says only what the test makes it say."""

    def __init__(self, endpoint: LinkEndpoint, *, route: bytes | None = None) -> None:
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        endpoint.connect(self.sock, route=route)
        self.frames: list[bytes] = []  # every frame the broker sent here, as received

    def send(self, message: link_pb.LinkMessage) -> None:
        self.sock.send(message.SerializeToString())

    def read(self, seconds: float, *, until: str = "") -> list[link_pb.LinkMessage]:
        """What arrives within `seconds` (stopping early at a message of kind `until`)."""
        got: list[link_pb.LinkMessage] = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if not self.sock.poll(int(left * 1000)):
                break
            frame = self.sock.recv()
            self.frames.append(frame)
            message = link_pb.LinkMessage()
            message.ParseFromString(frame)
            got.append(message)
            if message.WhichOneof("body") == until:
                break
        return got

    def close(self) -> None:
        self.sock.close(linger=0)
        self.ctx.term()


def _kinds(messages: list[link_pb.LinkMessage]) -> list[str]:
    return [str(m.WhichOneof("body")) for m in messages]


def _refused(lab: Lab, reason: str) -> float:
    return metric_value(scrape(lab.facility), REFUSALS, reason=reason)


def _audited(lab: Lab, after: int) -> dict[tuple[str, str], int]:
    """(reason, device) -> count, summed over the link.refused entries after `after`."""
    found: dict[tuple[str, str], int] = {}
    for entry in audit_entries(lab.facility, kind="link.refused", after_seq=after):
        key = (str(entry.detail["reason"]), entry.subject)
        found[key] = found.get(key, 0) + int(entry.detail["count"])
    return found


def _wait_audited(lab: Lab, after: int, key: tuple[str, str]) -> dict[tuple[str, str], int]:
    """The audited refusals once `key` (reason, device) is among them."""

    def found() -> dict[tuple[str, str], int] | None:
        audited = _audited(lab, after)
        return audited if key in audited else None

    return eventually(found, timeout=30, what=f"{key} to be audited")


def _hello(device_id: str) -> link_pb.LinkMessage:
    hello = link_pb.Hello(device_id=device_id, num_qubits=5, grant_key=GrantKey.new().public)
    return link_pb.LinkMessage(hello=hello)


# ------------------------------------------------------------------------ takeover


def test_another_devices_key_on_an_attested_route_gets_nothing(tmp_path: Path) -> None:
    # A long silence limit: the dropped connection stays on the books for seconds, so that
    # the broker does send to its routing id while the thief holds it.
    timing = {"heartbeat_misses": 20, "link_refusal_audit_seconds": AUDIT_WINDOW}
    with LocalFacility(tmp_path / "facility", timing=timing) as facility:
        lab = Lab(facility)
        route = b"attested-connection-route"  # as if read from a log line
        real = lab.attester(route=route)
        assert real.answer(real.evidence(real.challenge())).affirming
        mark = last_audit_seq(facility)
        thief_key = lab.link_key_for("sim-restricted")  # authorised, for another device
        real.vanish()  # the real driver drops without a word
        thief = Dealer(thief_key, route=route)
        try:
            # The broker's heartbeats for the attested connection now reach the thief.
            assert "heartbeat" in _kinds(thief.read(10, until="heartbeat"))
            job = lab.queue_job()
            silent = thief.read(5, until="lease")  # listens, says nothing
            circuit = ghz_qasm2(3)
            _, thief_secret = load_keypair(thief_key.secret_key)
            for message in silent:
                if message.WhichOneof("body") == "lease":
                    assert message.lease.circuit_payload == b""
                    for key in (GrantKey.from_secret(z85.decode(thief_secret)), GrantKey.new()):
                        with pytest.raises(GrantError):
                            open_grant(message.lease, key, link_key=thief_key.link_key)
            # Then it speaks, on the route, and as the device it wants.
            thief.send(link_pb.LinkMessage(heartbeat=link_pb.Heartbeat(seq=1)))
            [bye] = [m for m in thief.read(10, until="goodbye") if m.HasField("goodbye")]
            assert bye.goodbye.code == link_pb.GOODBYE_CODE_WRONG_KEY
            thief.send(_hello(DEVICE))
            [bye] = [m for m in thief.read(10, until="goodbye") if m.HasField("goodbye")]
            assert bye.goodbye.code == link_pb.GOODBYE_CODE_WRONG_KEY
            assert "sim-restricted" in bye.goodbye.reason
            assert all(circuit not in frame for frame in thief.frames)
            assert "challenge" not in _kinds(silent)  # no attestation was offered to it
        finally:
            thief.close()
        # The job was never the thief's: the real driver comes back and runs it.
        assert not lab.device().connected or not lab.device().available
        facility.start_driver(DEVICE)
        done = wait_state(lab.alice, job.job_id, "COMPLETED", timeout=90)
        assert state_name(done) == "COMPLETED"
        assert _refused(lab, "route_taken") >= 1
        assert _refused(lab, "wrong_key") >= 1
        audited = _wait_audited(lab, mark, ("wrong_key", "sim-restricted"))
        assert audited.get(("route_taken", "sim-restricted"), 0) >= 1


def test_a_new_connection_with_the_same_key_and_route_inherits_nothing(lab: Lab) -> None:
    route = b"reused-route"
    real = lab.attester(route=route)
    assert real.answer(real.evidence(real.challenge())).affirming
    real.vanish()
    again = Dealer(lab.endpoint, route=route)  # the same key, the same routing id
    try:
        job = lab.queue_job()
        deadline = time.monotonic() + 30
        heard: list[link_pb.LinkMessage] = []
        while "goodbye" not in _kinds(heard) and time.monotonic() < deadline:
            again.send(link_pb.LinkMessage(heartbeat=link_pb.Heartbeat(seq=1)))
            heard += again.read(0.3, until="goodbye")
        [bye] = [m for m in heard if m.HasField("goodbye")]
        assert bye.goodbye.code == link_pb.GOODBYE_CODE_HELLO_FIRST  # attested? not this one
    finally:
        again.close()
    probe(lab.endpoint)
    assert not lab.device().available
    assert state_name(lab.alice.get_job(job.job_id)) == "QUEUED"


def _attested_route(lab: Lab) -> bytes:
    """The routing id of the device's one attested connection, read on the broker's loop (a
    peer chooses its routing id, and a host beside the driver can learn it: it is no secret)."""
    embedded = lab.facility.embedded
    assert embedded is not None
    assert embedded.broker is not None
    components = embedded.broker.components
    assert components is not None
    fleet = components.jobs.fleet
    clock = embedded.broker.clock

    async def routes() -> list[bytes]:
        now = clock.now()
        return [c.peer.route for c in fleet.for_device(DEVICE) if c.dispatchable_now(now)]

    [route] = embedded.run(routes())
    return bytes(route)


def _same_key_host(
    endpoint: LinkEndpoint, route: bytes, go: Event, speak: Event, out: Queue[Any]
) -> None:
    """Another host holding the device's own link key, in a process of its own: once `go` is
    set it connects on `route`, proves it holds the route (a broker heartbeat reaches it),
    listens without a word until a lease grant arrives and reports every frame it received;
    on `speak` it says something and reports the Goodbye code it gets."""
    out.put(("ready", None))
    go.wait(60)
    host = Dealer(endpoint, route=route)
    try:
        kinds = _kinds(host.read(30, until="heartbeat"))
        out.put(("route", kinds))
        host.read(60, until="lease")
        out.put(("heard", list(host.frames)))
        speak.wait(60)
        host.send(link_pb.LinkMessage(heartbeat=link_pb.Heartbeat(seq=1)))
        said = [m for m in host.read(30, until="goodbye") if m.HasField("goodbye")]
        out.put(("goodbye", said[0].goodbye.code if said else None))
    finally:
        host.close()


def _expect(out: Queue[Any], what: str) -> Any:
    kind, value = out.get(timeout=120)
    assert kind == what, (kind, value)
    return value


def test_the_same_link_key_on_an_attested_route_cannot_read_its_lease_grant(
    tmp_path: Path,
) -> None:
    # A long silence limit: the killed driver's connection stays on the books (attested) for
    # half a minute, so the broker does dispatch to its routing id while the other host holds
    # it. A slow tick, so that no heartbeat falls between the kill and the other host's connect
    # (one would find the route gone and end the connection before the attack starts).
    timing = {"heartbeat_misses": 100, "tick_seconds": 0.5}
    with LocalFacility(tmp_path / "facility", timing=timing) as facility:
        lab = Lab(facility)
        real = facility.start_driver(DEVICE)  # the real driver agent, sim-open's own link key
        facility.wait_available(lab.olivia, DEVICE, timeout=90)
        route = _attested_route(lab)
        spawn = multiprocessing.get_context("spawn")
        go, speak, out = spawn.Event(), spawn.Event(), spawn.Queue()
        # The same link key file the real driver uses: the other host holds it too.
        host = spawn.Process(target=_same_key_host, args=(lab.endpoint, route, go, speak, out))
        host.start()
        try:
            _expect(out, "ready")
            real.kill()  # no Goodbye: the broker still holds its connection as attested
            real.wait(30)  # gone, its socket closed: the route is free to take
            go.set()
            assert "heartbeat" in _expect(out, "route")  # the broker's sends now reach the host
            job = lab.queue_job()  # dispatched to the attested connection: to its route
            frames: list[bytes] = _expect(out, "heard")
            assert state_name(lab.alice.get_job(job.job_id)) == "DISPATCHED"
            speak.set()
            assert _expect(out, "goodbye") == link_pb.GOODBYE_CODE_HELLO_FIRST
        finally:
            go.set()
            speak.set()
            host.join(60)
            if host.is_alive():
                host.kill()
        messages = [link_pb.LinkMessage.FromString(frame) for frame in frames]
        [lease] = [m.lease for m in messages if m.HasField("lease")]  # the grant reached it
        # Nothing it received holds the researcher's circuit...
        circuit = ghz_qasm2(3)
        assert all(circuit not in frame for frame in frames)
        assert all(b"cx q[1],q[2]" not in frame for frame in frames)
        # ...and no key it holds opens the grant: not the link key it shares with the real
        # driver, not a grant key of its own.
        public, secret = load_keypair(lab.endpoint.secret_key)
        for key in (GrantKey.from_secret(z85.decode(secret)), GrantKey.new()):
            with pytest.raises(GrantError, match="does not open"):
                open_grant(lease, key, link_key=z85.decode(public))
        # Its first word ended the stale connection: the job went back to the queue, and a
        # real driver (attesting afresh, with a grant key of its own) runs it.
        back = wait_state(lab.alice, job.job_id, "QUEUED", "COMPLETED", timeout=60)
        assert state_name(back) == "QUEUED"
        requeued = audit_entries(facility, kind="job.requeued")
        assert [e.subject for e in requeued] == [job.job_id]
        facility.start_driver(DEVICE)
        done = wait_state(lab.alice, job.job_id, "COMPLETED", timeout=90)
        assert state_name(done) == "COMPLETED"


# ------------------------------------------------------------------------ challenges


def test_a_challenge_is_answered_only_on_the_connection_it_was_sent_to(lab: Lab) -> None:
    first = lab.attester()
    nonce = first.challenge()
    second = lab.attester()
    second.challenge()
    refused = second.answer(second.evidence(nonce))  # the first connection's nonce
    assert not refused.affirming
    assert reason_codes(refused.reasons) == ["NONCE_UNKNOWN"]
    verdict = first.answer(first.evidence(nonce))  # still good where it was issued
    assert verdict.affirming, list(verdict.reasons)


# ------------------------------------------------------------------------ Hello flood


def _flood(endpoint: LinkEndpoint, most: int, seconds: float, stop: Event, out: Queue[Any]) -> None:
    """Hellos from one key on six connections, as fast as the link takes them (at most `most`,
    for at most `seconds`), in a process of its own as an attacker's would be; reports how many
    it sent and the Goodbye codes it got."""
    dealers = [Dealer(endpoint) for _ in range(6)]
    hellos = [_hello(DEVICE).SerializeToString(), _hello("sim-restricted").SerializeToString()]
    sent = reported = 0
    goodbyes: dict[int, int] = {}
    deadline = time.monotonic() + seconds
    try:
        while not stop.is_set() and sent < most and time.monotonic() < deadline:
            for dealer in dealers:
                if dealer.sock.poll(0, zmq.POLLOUT):
                    dealer.sock.send(hellos[sent % 10 == 0], zmq.NOBLOCK)
                    sent += 1
                while dealer.sock.poll(0):
                    message = link_pb.LinkMessage()
                    message.ParseFromString(dealer.sock.recv())
                    if message.HasField("goodbye"):
                        code = message.goodbye.code
                        goodbyes[code] = goodbyes.get(code, 0) + 1
            if sent >= reported + 1000:
                reported = sent
                out.put(("sent", sent))
    finally:
        for dealer in dealers:
            dealer.close()
        out.put(("done", (sent, goodbyes)))


def test_a_hello_flood_from_one_key_stops_no_one_else_attesting(lab: Lab) -> None:
    facility = lab.facility
    olivia = facility.client("olivia")
    mark = last_audit_seq(facility)
    # A second key authorised for the same device (a spare, stolen): it floods.
    spawn = multiprocessing.get_context("spawn")
    stop, out = spawn.Event(), spawn.Queue()
    flood = spawn.Process(
        target=_flood, args=(lab.link_key_for(DEVICE, "spare"), 2_000_000, 180.0, stop, out)
    )
    flood.start()
    try:
        assert out.get(timeout=60)[0] == "sent"  # the flood is going
        facility.start_driver(DEVICE)  # the same device's real driver, its own key
        facility.start_driver("sim-restricted")  # another device
        facility.wait_available(olivia, DEVICE, timeout=90)
        facility.wait_available(olivia, "sim-restricted", timeout=90)
        assert flood.is_alive(), "the flood ended before both drivers attested"
    finally:
        stop.set()
        while (report := out.get(timeout=60))[0] != "done":
            pass
        flood.join(30)
    sent, goodbyes = report[1]
    assert sent > 1000
    assert goodbyes.get(link_pb.GOODBYE_CODE_TOO_MANY_HELLOS, 0) > 0
    assert goodbyes.get(link_pb.GOODBYE_CODE_WRONG_KEY, 0) > 0
    assert _refused(lab, "hello_rate") > 0
    audited = _wait_audited(lab, mark, ("hello_rate", DEVICE))
    assert audited.get(("wrong_key", DEVICE), 0) > 0
    job = lab.alice.submit(ghz_qasm2(3), device_id=DEVICE, shots=100).job
    assert state_name(wait_state(lab.alice, job.job_id, "COMPLETED", timeout=90)) == "COMPLETED"


# ------------------------------------------------------------------------ refusals


def _lease(lab: Lab) -> tuple[link_pb.LeaseGrant, str, Attester]:
    """An attested scripted connection of the device and the lease it is given."""
    attester = lab.attester()
    envelope = attester.sign(attester.claims(attester.challenge()))
    assert attester.answer(envelope.to_json()).affirming
    lab.queue_job()
    return attester.lease(), envelope.digest(), attester


def test_every_link_refusal_is_counted_and_audited(lab: Lab, tmp_path: Path) -> None:
    mark = last_audit_seq(lab.facility)
    # An unknown key: the handshake is refused, nothing answers.
    _public, stranger_secret = create_keypair(tmp_path / "stranger", "stranger")
    stranger = Dealer(
        LinkEndpoint(address=lab.address, secret_key=stranger_secret, broker_key=lab.broker_key)
    )
    stranger.send(_hello(DEVICE))
    assert stranger.read(2) == []
    stranger.close()
    # A frame that is no LinkMessage, and a Hello for a device the key is not for.
    own = Dealer(lab.endpoint)
    own.sock.send(b"\xff\xfe not a frame")
    own.send(_hello("sim-restricted"))
    [bye] = own.read(10, until="goodbye")
    assert bye.goodbye.code == link_pb.GOODBYE_CODE_WRONG_KEY
    own.close()
    # Lease messages without the right to send them.
    grant, evidence_digest, attester = _lease(lab)
    counts = {"000": grant.shots}
    receipt = sign_receipt(
        ReceiptClaims(
            job_id=grant.job_id,
            device_id=DEVICE,
            circuit_digest=grant.circuit_digest,
            shots=grant.shots,
            result_digest=result_digest(counts),
            dispatch_nonce=grant.dispatch_nonce,
            evidence_digest=evidence_digest,
            issued_at=time.time(),
        ),
        lab.device_key,
    ).to_json()

    def result(lease_id: str, job_id: str) -> link_pb.LinkMessage:
        body = link_pb.LeaseResult(
            lease_id=lease_id, job_id=job_id, counts=counts, execution_seconds=0.01, receipt=receipt
        )
        return link_pb.LinkMessage(result=body)

    attester.send(result("no-such-lease", grant.job_id))
    attester.send(result(grant.lease_id, "another-job"))
    attester.send(result(grant.lease_id, grant.job_id))
    wait_state(lab.alice, grant.job_id, "COMPLETED")
    attester.send(result(grant.lease_id, grant.job_id))
    probe(lab.endpoint)  # every message above has been handled
    reasons = [
        "unknown_key",
        "malformed_frame",
        "wrong_key",
        "lease_not_held",
        "wrong_job",
        "duplicate_result",
        "hello_first",
    ]

    def counted() -> bool:  # the socket's own refusals are counted on the broker's tick
        text = scrape(lab.facility)
        return all(metric_value(text, REFUSALS, reason=reason) >= 1 for reason in reasons)

    eventually(counted, timeout=30, what="every refusal to be counted")

    def all_audited() -> dict[tuple[str, str], int] | None:
        found = _audited(lab, mark)
        seen = {reason for reason, _device in found}
        return found if seen >= set(reasons) else None

    audited = eventually(all_audited, timeout=30, what="every refusal to be audited")
    assert audited[("unknown_key", "")] >= 1
    assert audited[("malformed_frame", "")] == 1
    for reason in ("wrong_key", "lease_not_held", "wrong_job", "duplicate_result"):
        assert audited[(reason, DEVICE)] == 1, reason


def test_a_garbage_flood_is_a_bounded_log_and_one_audit_record(
    lab: Lab, caplog: pytest.LogCaptureFixture
) -> None:
    facility = lab.facility
    facility.start_driver(DEVICE)
    facility.wait_available(facility.client("olivia"), DEVICE)
    mark = last_audit_seq(facility)
    caplog.set_level(logging.INFO)
    caplog.clear()
    garbage = Dealer(lab.endpoint)
    try:
        for n in range(1000):
            garbage.sock.send(b"\xff\xff" + n.to_bytes(2, "big") + b" garbage")

        def all_audited() -> list[AuditRow] | None:
            # One entry per window: a slow machine may spread the 1,000 over two windows.
            found = audit_entries(facility, kind="link.refused", after_seq=mark)
            return found if sum(int(e.detail["count"]) for e in found) >= 1000 else None

        audited = eventually(all_audited, timeout=30, what="the garbage to be audited")
    finally:
        garbage.close()
    assert {e.detail["reason"] for e in audited} == {"malformed_frame"}
    assert sum(int(e.detail["count"]) for e in audited) == 1000
    assert len(audited) <= 3  # in aggregate, not one entry per frame
    lines = [r for r in caplog.records if r.name.startswith(("broker", "zmq"))]
    assert len(lines) <= 5, [r.getMessage() for r in lines]
    assert metric_value(scrape(facility), REFUSALS, reason="malformed_frame") == 1000
    job = lab.alice.submit(ghz_qasm2(3), device_id=DEVICE, shots=100).job
    assert state_name(wait_state(lab.alice, job.job_id, "COMPLETED", timeout=90)) == "COMPLETED"
