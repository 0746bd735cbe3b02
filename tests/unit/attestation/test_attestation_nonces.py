from __future__ import annotations

import threading

import pytest

from attestation.nonces import NonceIssuer
from attestation.reasons import ReasonCode

T0 = 1_000.0


def test_issue_gives_fresh_random_nonces_of_the_asked_size() -> None:
    issuer = NonceIssuer(ttl_seconds=10, nonce_bytes=16)
    nonces = {issuer.issue("dev", T0) for _ in range(50)}
    assert len(nonces) == 50
    assert {len(n) for n in nonces} == {16}


def test_consume_accepts_once_then_reports_replay() -> None:
    issuer = NonceIssuer(ttl_seconds=10)
    nonce = issuer.issue("dev", T0)
    assert issuer.consume("dev", nonce, T0 + 1) is None
    assert issuer.consume("dev", nonce, T0 + 2) is ReasonCode.NONCE_REPLAYED


def test_unknown_nonce() -> None:
    issuer = NonceIssuer(ttl_seconds=10)
    issuer.issue("dev", T0)
    assert issuer.consume("dev", b"\x00" * 32, T0) is ReasonCode.NONCE_UNKNOWN


def test_expired_nonce_at_and_after_ttl() -> None:
    issuer = NonceIssuer(ttl_seconds=10)
    edge = issuer.issue("dev", T0)
    late = issuer.issue("dev", T0)
    just_in_time = issuer.issue("dev", T0)
    assert issuer.consume("dev", just_in_time, T0 + 9.999) is None
    assert issuer.consume("dev", edge, T0 + 10) is ReasonCode.NONCE_EXPIRED
    assert issuer.consume("dev", late, T0 + 15) is ReasonCode.NONCE_EXPIRED


def test_wrong_device_does_not_burn_the_nonce() -> None:
    issuer = NonceIssuer(ttl_seconds=10)
    nonce = issuer.issue("dev-a", T0)
    assert issuer.consume("dev-b", nonce, T0) is ReasonCode.NONCE_WRONG_DEVICE
    assert issuer.consume("dev-a", nonce, T0) is None


def test_check_does_not_consume() -> None:
    issuer = NonceIssuer(ttl_seconds=10)
    nonce = issuer.issue("dev", T0)
    assert issuer.check("dev", nonce, T0) is None
    assert issuer.check("dev", nonce, T0) is None
    assert issuer.consume("dev", nonce, T0) is None
    assert issuer.check("dev", nonce, T0) is ReasonCode.NONCE_REPLAYED


def test_used_nonces_are_remembered_until_expiry_then_pruned() -> None:
    issuer = NonceIssuer(ttl_seconds=10)
    nonce = issuer.issue("dev", T0)
    assert issuer.consume("dev", nonce, T0) is None
    issuer.issue("dev", T0 + 9)  # issuing prunes; the used nonce must survive this
    assert issuer.consume("dev", nonce, T0 + 9) is ReasonCode.NONCE_REPLAYED
    assert len(issuer) == 2
    issuer.issue("dev", T0 + 100)
    assert len(issuer) == 1
    assert issuer.consume("dev", nonce, T0 + 100) is ReasonCode.NONCE_UNKNOWN


def test_memory_stays_bounded_under_many_issues() -> None:
    issuer = NonceIssuer(ttl_seconds=1)
    for i in range(1_000):
        issuer.issue("dev", T0 + i)
    assert len(issuer) <= 3


def test_max_entries_drops_the_oldest() -> None:
    issuer = NonceIssuer(ttl_seconds=10, max_entries=2)
    first = issuer.issue("dev", T0)
    second = issuer.issue("dev", T0)
    third = issuer.issue("dev", T0)
    assert len(issuer) == 2
    assert issuer.consume("dev", first, T0) is ReasonCode.NONCE_UNKNOWN
    assert issuer.consume("dev", second, T0) is None
    assert issuer.consume("dev", third, T0) is None


def test_concurrent_consumers_accept_a_nonce_exactly_once() -> None:
    issuer = NonceIssuer(ttl_seconds=10)
    nonce = issuer.issue("dev", T0)
    threads = 8
    barrier = threading.Barrier(threads)
    outcomes: list[ReasonCode | None] = []
    lock = threading.Lock()

    def race() -> None:
        barrier.wait()
        outcome = issuer.consume("dev", nonce, T0)
        with lock:
            outcomes.append(outcome)

    workers = [threading.Thread(target=race) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert outcomes.count(None) == 1
    assert outcomes.count(ReasonCode.NONCE_REPLAYED) == threads - 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ttl_seconds": 0}, "ttl_seconds"),
        ({"ttl_seconds": 1, "nonce_bytes": 7}, "nonce_bytes"),
        ({"ttl_seconds": 1, "nonce_bytes": 65}, "nonce_bytes"),
        ({"ttl_seconds": 1, "max_entries": 0}, "max_entries"),
    ],
)
def test_constructor_refuses_bad_settings(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        NonceIssuer(**kwargs)  # type: ignore[arg-type]
