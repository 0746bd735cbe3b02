"""Offline check that witnesses a researcher pinned cosigned the checkpoint of their proof.

A checkpoint signed only by the broker's key shows what the holder of that key says the log is;
the holder (the broker, or whoever copied its key and database) could show one researcher a
forked log and everyone else another. A witness cosigns a head only after checking it grew
append-only from the last head it cosigned (`qtestbed audit witness`), so a cosignature from a
witness key the researcher pinned out of band means that witness saw this same head: a fork
shown to this researcher alone would have to fool the witness too.

`check_cosignatures` counts the distinct pinned witness keys with a valid cosignature over
exactly the checkpoint's log key id, tree size and root. A cosignature naming no pinned key is
not counted (and not an error: the bundle may carry witnesses the researcher does not rely
on); one naming a pinned key that does not verify, is not in its one canonical spelling, or
cosigns another log, size or root is a problem. Nothing of the broker is imported here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from attestation.dsse import Envelope, EnvelopeError
from attestation.keys import VerifyKey
from attestation.tree_heads import (
    TreeHeadError,
    open_checkpoint,
    open_cosignature,
    signer_key_ids,
)


@dataclass(frozen=True, kw_only=True, slots=True)
class WitnessCheck:
    """Which pinned witnesses vouch for the checkpoint, and what is wrong with the rest."""

    witnesses: frozenset[str]  # key ids of pinned witnesses with a valid cosignature
    problems: tuple[str, ...]
    unpinned: int  # cosignatures by keys the researcher did not pin (not counted)


def check_cosignatures(
    checkpoint: bytes,
    log_key: VerifyKey,
    cosignatures: Sequence[bytes],
    pinned: Sequence[VerifyKey],
) -> WitnessCheck:
    """The pinned witnesses whose cosignature in `cosignatures` holds for `checkpoint` (which
    must verify under `log_key`), and every problem with a cosignature naming a pinned key."""
    try:
        head = open_checkpoint(checkpoint, log_key)
    except TreeHeadError as exc:
        return WitnessCheck(
            witnesses=frozenset(),
            problems=(f"cosignatures cannot be checked: {exc}",),
            unpinned=0,
        )
    by_id = {key.key_id: key for key in pinned}
    valid: set[str] = set()
    problems: list[str] = []
    unpinned = 0
    for i, envelope in enumerate(cosignatures):
        key = next((by_id[k] for k in signer_key_ids(envelope) if k in by_id), None)
        if key is None:
            unpinned += 1
            continue
        where = f"cosignature {i} (witness key {key.key_id[:16]}...)"
        try:
            canonical = Envelope.from_json(envelope).to_json() == envelope
            cosigned = open_cosignature(envelope, key)
        except (EnvelopeError, TreeHeadError) as exc:
            problems.append(f"{where}: {exc}")
            continue
        if not canonical:
            problems.append(f"{where}: the envelope is not in canonical form")
        elif cosigned.log_key_id != log_key.key_id:
            problems.append(f"{where} is for log key {cosigned.log_key_id[:16]}..., not this log")
        elif cosigned.tree_size != head.tree_size or cosigned.root_hash != head.root_hash:
            problems.append(
                f"{where} cosigns tree size {cosigned.tree_size} with root "
                f"{cosigned.root_hash[:16]}..., not the checkpoint's tree size {head.tree_size} "
                f"with root {head.root_hash[:16]}..."
            )
        else:
            valid.add(key.key_id)
    return WitnessCheck(witnesses=frozenset(valid), problems=tuple(problems), unpinned=unpinned)
