"""Tamper evidence of the audit log, tried against many random tamperings (stdlib `random`,
fixed seeds): every one must be found, and the entry it names must be the right one.

The attacker here can read and write every row but has no broker key. "Exact" tamperings
(breaking the chain) must name the changed entry itself; a rewrite with the whole chain
recomputed can only be located between two checkpoints, and the verdict must say which two.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from attestation.dsse import Envelope, sign_envelope
from attestation.keys import KeyKind, SigningKey
from broker.audit.chain import GENESIS_HASH, canonical_event_bytes, chain_hash, verify_chain
from broker.audit.checkpointer import AuditCheckpointer, AuditLogError
from broker.audit.checkpoints import (
    CHECKPOINT_PAYLOAD_TYPE,
    checkpoint_payload,
    sign_checkpoint,
    verify_checkpoint,
)
from broker.audit.merkle import audit_leaf, merkle_root
from broker.audit.model import AuditEntry, AuditEvent, Checkpoint
from broker.audit.verification import AuditVerdict
from broker.audit.verify import LogVerdict, LogVerifier, iter_entries, verify_log
from qtestbed.cli.audit import render

SEEDS = range(200)
T0 = 1_700_000_000.0
KINDS = ("job.submitted", "job.dispatched", "clearance.denied", "attestation.failed")


# ---- building honest logs ------------------------------------------------------------------


def random_text(rng: random.Random, low: int = 1, high: int = 12) -> str:
    return "".join(
        rng.choice("abcdefghijklmnopqrstuvwxyz0123456789-._") for _ in range(rng.randint(low, high))
    )


def random_event(rng: random.Random, i: int) -> AuditEvent:
    detail: dict[str, Any] = {random_text(rng): random_text(rng) for _ in range(rng.randint(0, 3))}
    if rng.random() < 0.5:
        detail["n"] = rng.randrange(1_000_000)
    if rng.random() < 0.3:
        detail["nested"] = {"reasons": [random_text(rng)], "ok": rng.random() < 0.5}
    return AuditEvent(
        kind=rng.choice(KINDS),
        actor=random_text(rng),
        subject=random_text(rng),
        at=T0 + i + round(rng.random(), 6),
        detail=detail,
    )


def rechain(entries: Sequence[AuditEntry]) -> list[AuditEntry]:
    """Link entries as listed (their seqs kept): what an honest writer, or an attacker who
    recomputes the chain, produces."""
    out: list[AuditEntry] = []
    prev = GENESIS_HASH
    for entry in entries:
        linked = AuditEntry(
            seq=entry.seq,
            event=entry.event,
            prev_hash=prev,
            entry_hash=chain_hash(prev, entry.seq, entry.event),
        )
        out.append(linked)
        prev = linked.entry_hash
    return out


def honest_log(rng: random.Random, n: int) -> list[AuditEntry]:
    placeholder = [
        AuditEntry(seq=i, event=random_event(rng, i), prev_hash="", entry_hash="")
        for i in range(1, n + 1)
    ]
    return rechain(placeholder)


def checkpoint_sizes(rng: random.Random, n: int) -> list[int]:
    """Random growing tree sizes in 1..n; the log's end is checkpointed half of the time."""
    sizes: list[int] = []
    size = 0
    while True:
        size += rng.randint(1, 15)
        if size >= n:
            break
        sizes.append(size)
    if n and rng.random() < 0.5:
        sizes.append(n)
    return sizes


def sign_sizes(
    entries: Sequence[AuditEntry], sizes: Sequence[int], key: SigningKey
) -> list[Checkpoint]:
    return [
        sign_checkpoint(
            size, merkle_root(audit_leaf(e) for e in entries[:size]).hex(), T0 + 10 * size, key
        )
        for size in sizes
    ]


@dataclass(frozen=True)
class Log:
    entries: list[AuditEntry]
    sizes: list[int]
    checkpoints: list[Checkpoint]

    @property
    def n(self) -> int:
        return len(self.entries)

    def covered(self, seq: int) -> bool:
        return bool(self.sizes) and seq <= self.sizes[-1]

    def bounds(self, seq: int) -> tuple[int, int]:
        """(first seq after the last checkpoint below `seq`, size of the first covering it)."""
        low = max((s for s in self.sizes if s < seq), default=0) + 1
        high = min(s for s in self.sizes if s >= seq)
        return low, high


class Logs:
    """Random logs with signed checkpoints, one per seed, built once per module."""

    def __init__(self) -> None:
        self.key = SigningKey.generate(KeyKind.ED25519)
        self.other = SigningKey.generate(KeyKind.ED25519)
        self._cache: dict[tuple[int, int], Log] = {}

    def get(self, seed: int, minimum: int = 2) -> Log:
        if (seed, minimum) not in self._cache:
            rng = random.Random(f"log-{seed}-{minimum}")
            n = rng.randint(minimum, 60)
            entries = honest_log(rng, n)
            sizes = checkpoint_sizes(rng, n)
            self._cache[seed, minimum] = Log(entries, sizes, sign_sizes(entries, sizes, self.key))
        return self._cache[seed, minimum]

    def verify(
        self, entries: Sequence[AuditEntry], checkpoints: Sequence[Checkpoint]
    ) -> LogVerdict:
        return verify_log(entries, checkpoints, self.key.public_key)


@pytest.fixture(scope="module")
def logs() -> Logs:
    return Logs()


def every_seed(
    seeds: range = SEEDS,
) -> Callable[[Callable[[Logs, int], None]], Callable[[Logs], None]]:
    """Run a check once per seed inside one test (pytest's per-test cost would dominate),
    naming the failing seed."""

    def decorate(check: Callable[[Logs, int], None]) -> Callable[[Logs], None]:
        def test(logs: Logs) -> None:
            for seed in seeds:
                try:
                    check(logs, seed)
                except AssertionError as exc:
                    raise AssertionError(f"seed {seed}: {exc}") from exc

        test.__name__, test.__qualname__, test.__doc__ = (
            check.__name__,
            check.__qualname__,
            check.__doc__,
        )
        return test

    return decorate


def assert_exact(verdict: LogVerdict, seq: int, context: object) -> None:
    """Found, naming `seq` exactly, in a sentence, with a sound suspect range."""
    assert not verdict.ok, context
    assert verdict.first_bad_seq == seq, (context, verdict.problems)
    assert verdict.suspect_range is not None
    low, high = verdict.suspect_range
    assert low <= seq <= high, (context, verdict.suspect_range)
    assert verdict.verified_through < seq
    assert any(f"seq {seq}" in p for p in verdict.problems), (context, verdict.problems)


# ---- mutations -----------------------------------------------------------------------------


def mutate_text(rng: random.Random, text: str) -> str:
    if not text:
        return "x"
    i = rng.randrange(len(text))
    choices = [c for c in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123456789" if c != text[i]]
    return text[:i] + rng.choice(choices) + text[i + 1 :]


def flip_float_byte(rng: random.Random, value: float) -> float:
    raw = bytearray(struct.pack(">d", value))
    while True:
        i = rng.randrange(8)
        flipped = bytearray(raw)
        flipped[i] ^= rng.randint(1, 255)
        result: float = struct.unpack(">d", bytes(flipped))[0]
        if math.isfinite(result):
            return result


def mutate_detail(rng: random.Random, detail: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(json.dumps(detail))
    if not out or rng.random() < 0.3:
        key = mutate_text(rng, rng.choice(sorted(out)) if out else "")
        while key in out:
            key += "x"
        out[key] = out.pop(rng.choice(sorted(out))) if out else 1
        return out
    key = rng.choice(sorted(out))
    value = out[key]
    if isinstance(value, str):
        out[key] = mutate_text(rng, value)
    elif isinstance(value, int):
        out[key] = value ^ rng.randint(1, 255)
    else:
        out[key] = {**value, "ok": not value["ok"]}
    return out


def mutate_event(rng: random.Random, event: AuditEvent) -> AuditEvent:
    """Change one field of `event` by one character, byte or value."""
    which = rng.choice(("kind", "actor", "subject", "at", "detail"))
    if which == "at":
        changed = dataclasses.replace(event, at=flip_float_byte(rng, event.at))
    elif which == "detail":
        changed = dataclasses.replace(event, detail=mutate_detail(rng, dict(event.detail)))
    else:
        text: dict[str, Any] = {which: mutate_text(rng, getattr(event, which))}
        changed = dataclasses.replace(event, **text)
    assert canonical_event_bytes(changed) != canonical_event_bytes(event)
    return changed


def renumber(entries: Sequence[AuditEntry], start: int) -> list[AuditEntry]:
    """Give entries consecutive seqs from `start`, keeping their stored hashes (a DB UPDATE)."""
    return [dataclasses.replace(e, seq=start + i) for i, e in enumerate(entries)]


def forged_after(entries: Sequence[AuditEntry], position: int, rng: random.Random) -> AuditEntry:
    """A well-formed entry linked after the first `position` entries."""
    prev = entries[position - 1].entry_hash if position else GENESIS_HASH
    event = random_event(rng, 10_000)
    seq = position + 1
    return AuditEntry(seq=seq, event=event, prev_hash=prev, entry_hash=chain_hash(prev, seq, event))


# ---- untouched logs ------------------------------------------------------------------------


@every_seed()
def test_an_untouched_log_verifies(logs: Logs, seed: int) -> None:
    log = logs.get(seed, minimum=0)
    verdict = logs.verify(log.entries, log.checkpoints)
    assert verdict.ok, verdict.problems
    assert verdict.problems == []
    assert verdict.first_bad_seq is None
    assert verdict.suspect_range is None
    assert verdict.entries_checked == log.n
    assert verdict.checkpoints_checked == len(log.sizes)
    last = log.sizes[-1] if log.sizes else 0
    assert verdict.unprotected_tail == log.n - last
    assert verdict.verified_through == last
    assert verify_chain(log.entries) is None  # the stores' own check agrees


def test_an_empty_log_without_checkpoints_verifies(logs: Logs) -> None:
    verdict = logs.verify([], [])
    assert verdict.ok
    assert (verdict.entries_checked, verdict.unprotected_tail, verdict.first_bad_seq) == (
        0,
        0,
        None,
    )


# ---- exact: the chain breaks at the changed entry ------------------------------------------


@every_seed()
def test_a_changed_field_is_named_exactly(logs: Logs, seed: int) -> None:
    log = logs.get(seed)
    rng = random.Random(f"flip-{seed}")
    k = rng.randint(1, log.n)
    entries = list(log.entries)
    entries[k - 1] = dataclasses.replace(
        entries[k - 1], event=mutate_event(rng, entries[k - 1].event)
    )
    verdict = logs.verify(entries, log.checkpoints)
    assert_exact(verdict, k, seed)
    assert any(f"seq {k} was changed" in p for p in verdict.problems)


@every_seed()
def test_a_changed_entry_with_its_own_hash_recomputed_is_named_exactly(
    logs: Logs, seed: int
) -> None:
    log = logs.get(seed)
    rng = random.Random(f"rehash-one-{seed}")
    k = rng.randint(1, log.n - 1)  # the last entry has no successor to betray it
    entries = list(log.entries)
    old = entries[k - 1]
    event = mutate_event(rng, old.event)
    entries[k - 1] = dataclasses.replace(
        old, event=event, entry_hash=chain_hash(old.prev_hash, k, event)
    )
    assert_exact(logs.verify(entries, log.checkpoints), k, seed)


@every_seed()
def test_a_changed_hash_column_is_named_exactly(logs: Logs, seed: int) -> None:
    log = logs.get(seed)
    rng = random.Random(f"hashcol-{seed}")
    k = rng.randint(1, log.n)
    entries = list(log.entries)
    column = rng.choice(("prev_hash", "entry_hash"))
    value = getattr(entries[k - 1], column)
    changes: dict[str, Any] = {column: mutate_text(rng, value)}
    entries[k - 1] = dataclasses.replace(entries[k - 1], **changes)
    assert_exact(logs.verify(entries, log.checkpoints), k, (seed, column))


@every_seed()
def test_a_deleted_entry_is_named_exactly(logs: Logs, seed: int) -> None:
    log = logs.get(seed)
    rng = random.Random(f"delete-{seed}")
    k = rng.randint(1, log.n)
    entries = log.entries[: k - 1] + log.entries[k:]
    verdict = logs.verify(entries, log.checkpoints)
    if k == log.n and not log.covered(k):
        # Dropping the unprotected end of the log is invisible: documented limitation.
        assert verdict.ok
        return
    assert_exact(verdict, k, seed)
    if k == log.n:
        assert any(f"entries after seq {k - 1} are missing" in p for p in verdict.problems)
    else:
        assert any(f"seq {k} is missing" in p for p in verdict.problems)


@every_seed()
def test_a_deleted_entry_with_the_rest_renumbered_is_named_exactly(logs: Logs, seed: int) -> None:
    log = logs.get(seed)
    rng = random.Random(f"delete-renumber-{seed}")
    k = rng.randint(1, log.n - 1)
    entries = log.entries[: k - 1] + renumber(log.entries[k:], start=k)
    assert_exact(logs.verify(entries, log.checkpoints), k, seed)


@every_seed()
def test_an_inserted_entry_is_named_exactly(logs: Logs, seed: int) -> None:
    """A well-linked forgery slipped in before existing entries, which are renumbered."""
    log = logs.get(seed)
    rng = random.Random(f"insert-{seed}")
    p = rng.randint(0, log.n - 1)
    forged = forged_after(log.entries, p, rng)
    entries = [*log.entries[:p], forged, *renumber(log.entries[p:], start=p + 2)]
    verdict = logs.verify(entries, log.checkpoints)
    assert_exact(verdict, p + 1, seed)
    assert any(f"seq {p + 1} to seq {p + 1} were inserted" in x for x in verdict.problems)


@every_seed()
def test_an_inserted_entry_reusing_a_seq_is_named_exactly(logs: Logs, seed: int) -> None:
    log = logs.get(seed)
    rng = random.Random(f"insert-dup-{seed}")
    p = rng.randint(0, log.n - 1)
    forged = forged_after(log.entries, p, rng)
    entries = [*log.entries[:p], forged, *log.entries[p:]]
    assert_exact(logs.verify(entries, log.checkpoints), p + 1, seed)


@every_seed()
def test_reordered_entries_are_named_exactly(logs: Logs, seed: int) -> None:
    log = logs.get(seed)
    rng = random.Random(f"swap-{seed}")
    i, j = sorted(rng.sample(range(1, log.n + 1), 2))
    entries = list(log.entries)
    if seed % 2:  # rows returned in another order, each keeping its seq
        entries[i - 1], entries[j - 1] = entries[j - 1], entries[i - 1]
    else:  # the contents of two rows exchanged, the seq column left in place
        a, b = entries[i - 1], entries[j - 1]
        entries[i - 1] = dataclasses.replace(b, seq=i)
        entries[j - 1] = dataclasses.replace(a, seq=j)
    assert_exact(logs.verify(entries, log.checkpoints), i, (seed, i, j))


# ---- bounded: the whole chain recomputed after the change ----------------------------------


@every_seed()
def test_a_rewrite_with_the_chain_recomputed_is_bounded_by_checkpoints(
    logs: Logs, seed: int
) -> None:
    log = logs.get(seed, minimum=16)
    rng = random.Random(f"rechain-{seed}")
    k = rng.randint(1, log.sizes[-1])  # covered by a checkpoint
    entries = list(log.entries)
    entries[k - 1] = dataclasses.replace(
        entries[k - 1], event=mutate_event(rng, entries[k - 1].event)
    )
    entries = rechain(entries)
    assert verify_chain(entries) is None  # the chain alone can no longer tell
    verdict = logs.verify(entries, log.checkpoints)
    low, high = log.bounds(k)
    assert not verdict.ok
    assert verdict.first_bad_seq == low, (seed, k, verdict.problems)
    assert verdict.suspect_range == (low, high)
    assert verdict.verified_through == low - 1
    number = log.sizes.index(high) + 1
    assert any(
        f"checkpoint #{number} (tree size {high}" in p
        and f"at or before seq {high} (and at or after seq {low})" in p
        for p in verdict.problems
    ), verdict.problems


@every_seed()
def test_a_hidden_rewrite_before_a_deliberate_break_stays_in_the_suspect_range(
    logs: Logs, seed: int
) -> None:
    """A rewrite with the chain recomputed, then a cruder edit later to draw attention."""
    log = logs.get(seed, minimum=16)
    rng = random.Random(f"decoy-{seed}")
    k = rng.randint(1, log.sizes[-1])
    decoy = rng.randint(k, log.n)
    entries = list(log.entries)
    entries[k - 1] = dataclasses.replace(
        entries[k - 1], event=mutate_event(rng, entries[k - 1].event)
    )
    entries = rechain(entries)
    entries[decoy - 1] = dataclasses.replace(
        entries[decoy - 1], event=mutate_event(rng, entries[decoy - 1].event)
    )
    verdict = logs.verify(entries, log.checkpoints)
    assert not verdict.ok
    assert verdict.suspect_range is not None
    low, high = verdict.suspect_range
    assert low <= k <= high, (k, decoy, verdict.suspect_range)
    assert verdict.first_bad_seq is not None
    assert low <= verdict.first_bad_seq <= high


@every_seed()
def test_a_truncated_log_is_caught_by_a_later_checkpoint(logs: Logs, seed: int) -> None:
    log = logs.get(seed, minimum=16)
    rng = random.Random(f"truncate-{seed}")
    keep = rng.randint(0, log.sizes[-1] - 1)
    verdict = logs.verify(log.entries[:keep], log.checkpoints)
    assert_exact(verdict, keep + 1, seed)
    assert any(f"entries after seq {keep} are missing" in p for p in verdict.problems)


# ---- the documented limits: what an attacker without the key CAN do ------------------------


@every_seed(range(50))
def test_limit_rewriting_the_unprotected_tail_goes_unseen(logs: Logs, seed: int) -> None:
    log = logs.get(seed)
    if log.sizes and log.sizes[-1] == log.n:  # give it a tail: forget the newest checkpoint
        log = Log(log.entries, log.sizes[:-1], log.checkpoints[:-1])
    rng = random.Random(f"tail-{seed}")
    k = rng.randint((log.sizes[-1] if log.sizes else 0) + 1, log.n)
    entries = list(log.entries)
    entries[k - 1] = dataclasses.replace(
        entries[k - 1], event=mutate_event(rng, entries[k - 1].event)
    )
    entries = rechain(entries)
    verdict = logs.verify([*entries, forged_after(entries, log.n, rng)], log.checkpoints)
    assert verdict.ok
    assert verdict.unprotected_tail >= log.n + 1 - k + 1


@every_seed(range(50))
def test_limit_deleting_checkpoints_reopens_what_they_covered(logs: Logs, seed: int) -> None:
    """Why checkpoints must also be kept outside the database."""
    log = logs.get(seed, minimum=16)
    rng = random.Random(f"drop-checkpoints-{seed}")
    k = rng.randint(1, log.sizes[-1])
    entries = list(log.entries)
    entries[k - 1] = dataclasses.replace(
        entries[k - 1], event=mutate_event(rng, entries[k - 1].event)
    )
    rewritten = rechain(entries)
    survivors = [c for c in log.checkpoints if c.tree_size < k]
    assert logs.verify(rewritten, survivors).ok
    # A copy of any one checkpoint covering k, kept elsewhere, still catches it.
    _, high = log.bounds(k)
    kept = log.checkpoints[log.sizes.index(high)]
    assert not logs.verify(rewritten, [kept]).ok


# ---- checkpoints themselves ----------------------------------------------------------------


def tampered_checkpoints(log: Log, logs: Logs) -> dict[str, tuple[Checkpoint, str]]:
    """Ways to spoil the first checkpoint, with a phrase the verdict must contain."""
    cp = log.checkpoints[0]
    env = Envelope.from_json(cp.envelope)
    sig = env.signatures[0]
    bad_sig = dataclasses.replace(sig, sig=bytes([sig.sig[0] ^ 1]) + sig.sig[1:])
    foreign = sign_checkpoint(cp.tree_size, cp.root_hash, cp.at, logs.other)
    wrong_type = sign_envelope("application/vnd.qtestbed.receipt.v1+json", env.payload, logs.key)
    return {
        "signature": (
            dataclasses.replace(
                cp, envelope=dataclasses.replace(env, signatures=(bad_sig,)).to_json()
            ),
            "signature does not verify",
        ),
        "tree size column": (
            dataclasses.replace(cp, tree_size=cp.tree_size + 1),
            "signed tree size",
        ),
        "root column": (dataclasses.replace(cp, root_hash="0" * 64), "signed root"),
        "time column": (dataclasses.replace(cp, at=cp.at + 1), "stored time"),
        "other key": (foreign, "signature does not verify"),
        "payload type": (dataclasses.replace(cp, envelope=wrong_type.to_json()), "payload type"),
        "garbage": (dataclasses.replace(cp, envelope=b"{not json"), "not JSON"),
        "other payload": (
            dataclasses.replace(cp, envelope=log.checkpoints[-1].envelope),
            "signed",
        ),
    }


def test_spoiled_checkpoints_are_reported_and_not_trusted(logs: Logs) -> None:
    log = logs.get(3, minimum=40)
    assert len(log.checkpoints) >= 2
    for name, (bad, phrase) in tampered_checkpoints(log, logs).items():
        verdict = logs.verify(log.entries, [bad, *log.checkpoints[1:]])
        assert not verdict.ok, name
        assert verdict.first_bad_seq is None, name  # the entries themselves are intact
        assert any(p.startswith("checkpoint #1 ") and phrase in p for p in verdict.problems), (
            name,
            verdict.problems,
        )


def test_a_forged_checkpoint_cannot_vouch_for_a_rewritten_log(logs: Logs) -> None:
    log = logs.get(5, minimum=30)
    entries = list(log.entries)
    entries[0] = dataclasses.replace(entries[0], event=random_event(random.Random(1), 0))
    entries = rechain(entries)
    forged = [
        dataclasses.replace(
            c, root_hash=merkle_root(audit_leaf(e) for e in entries[: c.tree_size]).hex()
        )
        for c in log.checkpoints
    ]
    verdict = logs.verify(entries, forged)
    assert not verdict.ok
    assert all(any(f"checkpoint #{i} " in p for p in verdict.problems) for i in (1, 2))


def test_checkpoints_must_grow(logs: Logs) -> None:
    log = logs.get(7, minimum=40)
    first, second = log.checkpoints[0], log.checkpoints[1]
    for order in ([second, first], [first, first]):
        verdict = logs.verify(log.entries, [*order, *log.checkpoints[2:]])
        assert not verdict.ok
        assert verdict.first_bad_seq is None
        assert any(
            "checkpoint #2 " in p and "does not grow past checkpoint #1" in p
            for p in verdict.problems
        )


def test_a_checkpoint_of_a_forked_log_does_not_match(logs: Logs) -> None:
    """The broker (key holder) signed another history of the same size: a fork or a restore."""
    log = logs.get(9, minimum=20)
    other = honest_log(random.Random("fork"), log.n)
    fork = sign_sizes(other, [log.sizes[0]], logs.key)[0]
    verdict = logs.verify(log.entries, [fork])
    assert verdict.first_bad_seq == 1
    assert verdict.suspect_range == (1, log.sizes[0])


def test_checkpoint_signing_round_trip_and_payload(logs: Logs) -> None:
    p256 = SigningKey.generate(KeyKind.ECDSA_P256)
    root = "ab" * 32
    for key in (logs.key, p256):
        cp = sign_checkpoint(12, root, 5, key)
        assert (cp.tree_size, cp.root_hash, cp.at, cp.key_id) == (
            12,
            root,
            5.0,
            key.public_key.key_id,
        )
        assert verify_checkpoint(cp, key.public_key) == []
        env = Envelope.from_json(cp.envelope)
        assert env.payload_type == CHECKPOINT_PAYLOAD_TYPE
        assert env.payload == b'{"at":5.0,"root_hash":"' + root.encode() + b'","tree_size":12}'
        assert env.payload == checkpoint_payload(12, root, 5)
    assert verify_checkpoint(sign_checkpoint(1, root, 1, p256), logs.key.public_key) != []


@pytest.mark.parametrize("root", ["AB" * 32, "ab" * 31, "zz" * 32])
def test_signing_refuses_a_malformed_root(logs: Logs, root: str) -> None:
    with pytest.raises(ValueError, match="hex"):
        sign_checkpoint(1, root, 1.0, logs.key)


# ---- the checkpointer ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entries", "seconds", "due"),
    [(0, 1e9, False), (1, 59.9, False), (99, 0, False), (100, 0, True), (1, 60, True)],
)
def test_checkpoint_is_due_after_enough_entries_or_time(
    logs: Logs, entries: int, seconds: float, due: bool
) -> None:
    assert AuditCheckpointer(logs.key).due(entries, seconds) is due


def test_checkpointer_settings_are_checked(logs: Logs) -> None:
    with pytest.raises(ValueError, match="every_entries"):
        AuditCheckpointer(logs.key, every_entries=0)
    with pytest.raises(ValueError, match="every_seconds"):
        AuditCheckpointer(logs.key, every_seconds=0)


@every_seed(range(30))
def test_checkpointer_fed_incrementally_signs_the_true_roots(logs: Logs, seed: int) -> None:
    rng = random.Random(f"checkpointer-{seed}")
    log = honest_log(rng, rng.randint(1, 150))
    cpr = AuditCheckpointer(logs.key, every_entries=rng.randint(1, 30), every_seconds=50)
    made: list[Checkpoint] = []
    now, fed = T0, 0
    while fed < len(log):
        step = rng.randint(1, 12)
        cpr.feed(iter(log[fed : fed + step]))  # any iterable: never the whole log again
        fed = min(fed + step, len(log))
        now += rng.uniform(0, 20)
        assert cpr.last_seq == fed == cpr.tree_size
        if cpr.due_at(now):
            made.append(cpr.make(now))
    leaves = [audit_leaf(e) for e in log]
    for cp in made:
        assert cp.root_hash == merkle_root(leaves[: cp.tree_size]).hex()
    assert cpr.root_hash == merkle_root(leaves).hex()
    verdict = logs.verify(log, made)
    assert verdict.ok, verdict.problems
    assert verdict.unprotected_tail == len(log) - (made[-1].tree_size if made else 0)


def test_checkpointer_due_at_counts_from_the_last_checkpoint(logs: Logs) -> None:
    log = honest_log(random.Random(1), 5)
    cpr = AuditCheckpointer(logs.key, every_entries=100, every_seconds=60)
    assert not cpr.due_at(T0)  # nothing to sign
    cpr.feed(log[:1])
    assert cpr.due_at(T0)  # nothing protects the log before its first checkpoint
    cpr.make(T0)
    cpr.feed(log[1:])
    assert not cpr.due_at(T0 + 59)
    assert cpr.due_at(T0 + 60)
    cpr.make(T0 + 60)
    assert cpr.last_checkpoint_size == 5
    with pytest.raises(ValueError, match="nothing new"):
        cpr.make(T0 + 120)


def test_checkpointer_refuses_a_broken_chain_and_stays_refusing(logs: Logs) -> None:
    log = honest_log(random.Random(2), 10)
    cpr = AuditCheckpointer(logs.key)
    cpr.feed(log[:4])
    with pytest.raises(AuditLogError, match="seq 5 is missing"):
        cpr.feed(log[5:])
    with pytest.raises(AuditLogError):
        cpr.feed([])
    with pytest.raises(AuditLogError):
        cpr.make(T0)


def test_checkpointer_resumes_on_a_stored_log_and_checks_its_checkpoints(logs: Logs) -> None:
    log = logs.get(11, minimum=40)
    resumed = AuditCheckpointer(logs.key, existing=log.checkpoints)
    resumed.feed(log.entries)
    assert resumed.last_checkpoint_size == log.sizes[-1]
    if log.sizes[-1] == log.n:
        with pytest.raises(ValueError, match="nothing new"):
            resumed.make(T0 + 1e6)
    else:
        cp = resumed.make(T0 + 1e6)
        assert logs.verify(log.entries, [*log.checkpoints, cp]).ok


def test_checkpointer_will_not_sign_over_a_rewritten_history(logs: Logs) -> None:
    log = logs.get(13, minimum=40)
    entries = list(log.entries)
    entries[0] = dataclasses.replace(entries[0], event=random_event(random.Random(4), 0))
    cpr = AuditCheckpointer(logs.key, existing=log.checkpoints)
    with pytest.raises(AuditLogError, match=r"checkpoint #1 .* no longer matches"):
        cpr.feed(rechain(entries))


def test_checkpointer_will_not_sign_a_log_shorter_than_a_stored_checkpoint(logs: Logs) -> None:
    log = logs.get(15, minimum=40)
    cpr = AuditCheckpointer(logs.key, existing=log.checkpoints)
    cpr.feed(log.entries[: log.sizes[-1] - 1])
    with pytest.raises(AuditLogError, match=f"covers {log.sizes[-1]} entries"):
        cpr.make(T0 + 1e6)


def test_checkpointer_refuses_spoiled_stored_checkpoints(logs: Logs) -> None:
    log = logs.get(17, minimum=40)
    bad = dataclasses.replace(log.checkpoints[0], root_hash="1" * 64)
    cpr = AuditCheckpointer(logs.key, existing=[bad])
    with pytest.raises(AuditLogError, match="signed root"):
        cpr.feed(log.entries)


# ---- streaming and rendering ---------------------------------------------------------------


class PagedSource:
    def __init__(self, entries: Sequence[AuditEntry]) -> None:
        self.entries = list(entries)
        self.calls: list[tuple[int, int]] = []

    def audit_entries(self, *, after_seq: int = 0, limit: int = 1000) -> list[AuditEntry]:
        self.calls.append((after_seq, limit))
        return [e for e in self.entries if e.seq > after_seq][:limit]


@pytest.mark.parametrize("n", [0, 6, 7, 50])
def test_entries_are_read_a_page_at_a_time(logs: Logs, n: int) -> None:
    log = honest_log(random.Random(n), n)
    source = PagedSource(log)
    got: Iterator[AuditEntry] = iter_entries(source, page=7)
    assert list(got) == log
    assert len(source.calls) == n // 7 + 1
    assert source.calls[0] == (0, 7)


def test_the_streaming_verifier_matches_verify_log(logs: Logs) -> None:
    log = logs.get(19, minimum=30)
    entries = log.entries[:5] + log.entries[6:]
    verifier = LogVerifier(log.checkpoints, logs.key.public_key)
    for entry in entries:
        verifier.add(entry)
    assert verifier.finish() == logs.verify(entries, log.checkpoints)


def test_verdict_renders_for_people_and_as_json(logs: Logs) -> None:
    log = logs.get(21, minimum=30)
    ok = logs.verify(log.entries, log.checkpoints)
    assert render(AuditVerdict.of_log(ok)).startswith(f"audit log OK: {log.n} entries")
    entries = list(log.entries)
    entries[2] = dataclasses.replace(entries[2], entry_hash="0" * 64)
    bad = logs.verify(entries, log.checkpoints)
    text = render(AuditVerdict.of_log(bad))
    assert text.startswith("audit log TAMPERED: first bad entry seq 3")
    assert "  - [chain] seq 3 was changed" in text
    as_json = json.loads(json.dumps(bad.to_dict()))
    assert as_json["first_bad_seq"] == 3
    assert as_json["ok"] is False


def test_many_chain_breaks_are_summarised(logs: Logs) -> None:
    log = honest_log(random.Random(5), 40)
    entries = [dataclasses.replace(e, entry_hash=e.entry_hash[::-1]) for e in log]
    verdict = logs.verify(entries, [])
    assert verdict.first_bad_seq == 1
    assert len(verdict.problems) <= 12
    assert any("more chain breaks not listed" in p for p in verdict.problems)
