"""/metrics on a broker in its own process, reached the way Prometheus reaches it: mutual TLS,
as a principal with the scraper role, checked by the gRPC edge's identity code. Metrics name
hidden devices, so an uncleared researcher, a stranger, a revoked or removed scraper are all
refused, each refusal counted once by reason and audited in aggregate; and nobody holding
connections open can keep the scraper out for longer than the per-connection deadline."""

from __future__ import annotations

import contextlib
import datetime as dt
import select
import socket
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from attestation.keys import KeyKind, SigningKey
from attestation.pki import create_ca
from qtestbed.client import Client
from qtestbed.testing import LocalFacility, eventually, scrape_metrics
from qtestbed.v1 import access_pb2, credentials_pb2, credentials_pb2_grpc, grants_pb2
from tests.integration.identity_kit import Minter
from tests.integration.support import audit_entries, last_audit_seq

REFUSALS = "qtestbed_front_door_refusals_total"
SLOTS = 8  # broker.scrape.server.MAX_CONNECTIONS


@pytest.fixture
def facility(tmp_path: Path) -> Iterator[LocalFacility]:
    with LocalFacility(tmp_path / "facility", timing={"front_door_audit_seconds": 0.3}) as fac:
        fac.start_broker_process()
        yield fac


@pytest.fixture
def minter(facility: LocalFacility, tmp_path: Path) -> Minter:
    return Minter(facility, tmp_path / "minted")


def _url(facility: LocalFacility) -> str:
    assert facility.addresses is not None
    assert facility.addresses.metrics.startswith("https://127.0.0.1:")
    return facility.addresses.metrics


def _port(facility: LocalFacility) -> int:
    return int(_url(facility).rsplit(":", 1)[1].split("/")[0])


def _scrape_as(facility: LocalFacility, files: tuple[Path, Path] | None) -> str:
    """A scrape presenting `files` (certificate chain, key), or no certificate at all."""
    ca = facility.root / "ca" / "ca.pem"
    if files is not None:
        return scrape_metrics(_url(facility), ca=ca, cert=files[0], key=files[1])
    context = ssl.create_default_context(cafile=str(ca))
    with urllib.request.urlopen(_url(facility), timeout=10, context=context) as response:  # noqa: S310 - https
        return str(response.read().decode())


def _refused_in_handshake(attempt: Callable[[], object]) -> None:
    """The connection ends without any HTTP answer."""
    try:
        attempt()
    except urllib.error.HTTPError as exc:
        pytest.fail(f"answered over HTTP ({exc.code}), not refused in the handshake")
    except OSError:  # an alert, a reset, or a closed connection
        return
    pytest.fail("served: the handshake should have refused it")


def _forbidden(attempt: Callable[[], object]) -> str:
    with pytest.raises(urllib.error.HTTPError) as refused:
        attempt()
    assert refused.value.code == 403
    body: str = refused.value.read().decode()
    return body


def _refusals(facility: LocalFacility, as_: tuple[Path, Path] | None = None) -> dict[str, float]:
    """Front-door refusals by reason, scraped as init's scraper or the one in `as_`."""
    text = facility.scrape() if as_ is None else _scrape_as(facility, as_)
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(REFUSALS + "{"):
            reason = line.split('reason="', 1)[1].split('"', 1)[0]
            counts[reason] = float(line.rsplit(" ", 1)[1])
    return counts


def _counted(
    facility: LocalFacility,
    before: dict[str, float],
    expected: dict[str, int],
    *,
    as_: tuple[Path, Path] | None = None,
) -> None:
    """Exactly `expected` more refusals by reason than `before`, and no others."""

    def delta() -> dict[str, float]:
        now = _refusals(facility, as_)
        grown = {r: now[r] - before.get(r, 0.0) for r in now}
        return {r: n for r, n in grown.items() if n}

    def reached() -> dict[str, float] | None:
        found = delta()
        return found if all(found.get(r, 0) >= n for r, n in expected.items()) else None

    eventually(reached, timeout=30, what=f"refusals {expected} to be counted")
    assert delta() == expected


def _audited(facility: LocalFacility, after_seq: int, expected: dict[str, int]) -> None:
    """The aggregated edge.refused entries since `after_seq` add up to `expected` by reason."""

    def summed() -> dict[str, int]:
        totals: dict[str, int] = {}
        for row in audit_entries(facility, kind="edge.refused", after_seq=after_seq):
            reason = str(row.detail["reason"])
            totals[reason] = totals.get(reason, 0) + int(row.detail["count"])
        return totals

    eventually(lambda: summed() == expected or None, timeout=30, what=f"audit of {expected}")


def _credentials(client: Client) -> credentials_pb2_grpc.CredentialServiceStub:
    return credentials_pb2_grpc.CredentialServiceStub(client.channel)


def test_the_scraper_reads_every_device_and_a_researcher_reads_nothing(
    facility: LocalFacility,
) -> None:
    def restricted_shown() -> str | None:
        text = facility.scrape()
        return text if 'qtestbed_queue_depth{device="sim-restricted"}' in text else None

    eventually(restricted_shown, what="the hidden device's series in the scraper's view")
    # alice is cleared for sim-open only: the metrics would tell her sim-restricted exists.
    body = _forbidden(lambda: facility.scrape("alice"))
    assert "sim-restricted" not in body
    assert "qtestbed_" not in body
    assert "scraper" in body  # what it takes


def test_each_refusal_is_counted_once_by_reason_and_audited(
    facility: LocalFacility, minter: Minter
) -> None:
    stranger_key = SigningKey.generate(KeyKind.ECDSA_P256)
    stranger = create_ca(
        "not this facility", stranger_key, now=dt.datetime.now(dt.UTC), days=30, path_length=1
    )

    def pair(files: tuple[Path, Path, str]) -> tuple[Path, Path]:
        return files[0], files[1]

    before, seq = _refusals(facility), last_audit_seq(facility)
    # In the handshake: nothing reaches HTTP.
    _refused_in_handshake(lambda: _scrape_as(facility, None))
    other_ca = pair(minter.files(issuer=(stranger_key, stranger)))
    _refused_in_handshake(lambda: _scrape_as(facility, other_ca))
    expired = pair(minter.files(starts_in=dt.timedelta(days=-3), days=1))
    _refused_in_handshake(lambda: _scrape_as(facility, expired))
    plain = _url(facility).replace("https://", "http://")
    _refused_in_handshake(lambda: urllib.request.urlopen(plain, timeout=10).read())  # noqa: S310
    # After it: the identity checks of the gRPC edge, then the role.
    vendor = pair(minter.files(issuer=minter.vendor_ca()))
    assert "client-issuing CA" in _forbidden(lambda: _scrape_as(facility, vendor))
    mallory = pair(minter.files(name="mallory"))
    assert "not a registered principal" in _forbidden(lambda: _scrape_as(facility, mallory))
    _forbidden(lambda: facility.scrape("alice"))

    expected = {
        "no_certificate": 1,
        "bad_chain": 1,
        "expired": 1,
        "tls_other": 1,
        "wrong_issuer": 1,
        "unknown_principal": 1,
        "role_required": 1,
    }
    _counted(facility, before, expected)
    _audited(facility, seq, expected)
    subjects = {
        str(row.detail["reason"]): row.subject
        for row in audit_entries(facility, kind="edge.refused", after_seq=seq)
    }
    assert subjects["role_required"] == "alice"
    assert subjects["unknown_principal"] == "mallory"
    assert subjects["bad_chain"] == ""


def test_revoking_the_credential_or_taking_the_role_refuses_the_next_scrape(
    facility: LocalFacility, minter: Minter
) -> None:
    olivia = facility.client("olivia")

    def put(principal: access_pb2.Principal, version: int) -> None:
        request = access_pb2.PutPrincipalRequest(principal=principal, expected_version=version)
        olivia.call(olivia.access.PutPrincipal, request)

    record = olivia.call(
        olivia.access.GetPrincipal, access_pb2.GetPrincipalRequest(name="prometheus")
    )
    standby = access_pb2.Principal()  # a second monitoring identity, to read the counts
    standby.CopyFrom(record.principal)
    standby.name = "standby-scraper"
    del standby.roles[:]
    standby.roles.append("researcher")  # an edit cannot add the scraper role: it is granted
    put(standby, 0)
    filing = grants_pb2.RequestAccessRequest(
        principal="standby-scraper",
        kind=grants_pb2.ELEVATION_KIND_ROLE,
        value="scraper",
        duration_seconds=3600.0,
        reason="second monitoring identity",
    )
    filed = olivia.call(olivia.access_requests.RequestAccess, filing)
    petra = facility.client("petra")
    decision = grants_pb2.DecideAccessRequest(request_id=filed.request_id, reason="ok")
    petra.call(petra.access_requests.ApproveAccess, decision)
    standby_files = minter.files(name="standby-scraper")
    assert _scrape_as(facility, standby_files[:2])

    second_cert, second_key, serial = minter.files(name="prometheus")
    second = (second_cert, second_key)
    assert _scrape_as(facility, second)
    before, seq = _refusals(facility), last_audit_seq(facility)
    sam = facility.client("sam")
    sam.call(
        _credentials(sam).RevokeCredential,
        credentials_pb2.RevokeCredentialRequest(serial=serial, reason="scraper host rebuilt"),
    )
    assert "revoked" in _forbidden(lambda: _scrape_as(facility, second))
    assert facility.scrape()  # the credential init issued is another serial: still served

    del record.principal.roles[:]
    record.principal.roles.append("researcher")
    put(record.principal, record.meta.version)
    assert "scraper" in _forbidden(lambda: facility.scrape())
    olivia.call(olivia.access.DeletePrincipal, access_pb2.DeletePrincipalRequest(name="prometheus"))
    assert "not a registered principal" in _forbidden(lambda: facility.scrape())

    expected = {"revoked": 1, "role_required": 1, "unknown_principal": 1}
    _counted(facility, before, expected, as_=standby_files[:2])
    _audited(facility, seq, expected)


def test_a_silent_connection_does_not_delay_a_scrape(facility: LocalFacility) -> None:
    with socket.create_connection(("127.0.0.1", _port(facility)), timeout=60) as silent:
        assert facility.scrape()
        silent.setblocking(False)
        with pytest.raises(BlockingIOError):  # still open: the scrape did not wait it out
            silent.recv(1)


def _trickling_scraper(facility: LocalFacility, address: tuple[str, int]) -> ssl.SSLSocket:
    """The scraper identity, through the handshake, with half a request line sent."""
    users = facility.root / "users"
    context = ssl.create_default_context(cafile=str(facility.root / "ca" / "ca.pem"))
    context.load_cert_chain(users / "prometheus.pem", users / "prometheus.key")
    sock = context.wrap_socket(
        socket.create_connection(address, timeout=60), server_hostname="127.0.0.1"
    )
    sock.sendall(b"GET /metr")
    return sock


def _trickle_until_cut(sock: socket.socket, *, most: int = 60) -> None:
    for _ in range(most):
        try:
            sock.send(b"a")
        except OSError:  # the broker shut its end: the connection was cut
            return
        readable, _, _ = select.select([sock], [], [], 1.0)  # the trickle's pace: one a second
        if readable:
            with contextlib.suppress(ConnectionResetError, ssl.SSLEOFError):  # cut mid-byte
                assert sock.recv(1) == b""
            return
    pytest.fail(f"a client sending a byte a second held its connection for {most} s")


def _still_open(sock: socket.socket) -> None:
    sock.setblocking(False)
    with pytest.raises((BlockingIOError, ssl.SSLWantReadError)):  # nothing to read, no end
        sock.recv(1)
    sock.settimeout(60)


def test_connections_beyond_the_slots_are_turned_away_and_held_ones_are_cut(
    facility: LocalFacility,
) -> None:
    before = _refusals(facility)
    address = ("127.0.0.1", _port(facility))
    # One slot held after the handshake by a scraper that trickles its request; the others by
    # connections that never send a byte.
    held: list[socket.socket] = [_trickling_scraper(facility, address)]
    held += [socket.create_connection(address, timeout=60) for _ in range(SLOTS - 1)]
    try:
        with socket.create_connection(address, timeout=60) as ninth:
            assert ninth.recv(1) == b""  # closed at once, before any TLS
        for sock in held:  # ... while every held one is still open
            _still_open(sock)
        # The scraper keeps sending a byte a second (no single read ever waits long), yet its
        # connection ends with the deadline, like the silent ones.
        _trickle_until_cut(held[0])
        for sock in held[1:]:
            assert sock.recv(1) == b""
    finally:
        for sock in held:
            sock.close()

    turned_away = 0

    def recovered() -> str | None:
        nonlocal turned_away
        try:
            return facility.scrape()
        except OSError:  # a cut connection's slot is freed just after the cut
            turned_away += 1
            return None

    eventually(recovered, what="a scrape once the held connections were cut")
    _counted(facility, before, {"busy": 1 + turned_away, "deadline": SLOTS})
