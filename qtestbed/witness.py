"""The audit witness: a process the security team runs apart from the broker, with its own key
and its own append-only file, that cosigns the broker's checkpoints only when the log grew
append-only since the last one it cosigned, and raises an alarm when it did not.

One round (`Witness.poll`), after the transparency-dev witness and Sigsum practice:

1. List the broker's checkpoints and verify each with the broker's key (pinned: the broker's
   certificate, given to the witness out of band).
2. A listed checkpoint of a size the witness already cosigned, with another root: **fork**.
   The newest listed smaller than the newest cosigned (or the one cosigned gone): **rollback**.
3. For the newest listed beyond the newest cosigned: fetch an RFC 6962 consistency proof from
   the cosigned size and verify it offline (`attestation.merkle_proofs`); a proof that does not
   verify is a fork too (**inconsistent**).
4. Append the checkpoint and the cosignature to the witness file (fsynced), then hand the
   cosignature to the broker (`AddCosignature`).

An alarm is appended to the file with its evidence and is sticky: from then on the witness
keeps watching and reporting but cosigns nothing, until someone who has looked moves the file
aside. The file is the witness's memory: restarting never forgets what it cosigned, so a
broker rolled back while the witness was down is still caught.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from attestation.keys import SigningKey, VerifyKey
from attestation.merkle_proofs import EMPTY_ROOT, verify_consistency
from attestation.tree_heads import TreeHead, TreeHeadError, cosign, open_checkpoint
from attestation.witness_log import (
    WitnessAlarm,
    alarm_record,
    append_record,
    checkpoint_record,
    read_witness_log,
)

log = logging.getLogger("qtestbed.witness")


class LogSource(Protocol):
    """The broker's audit service, as the witness sees it."""

    def checkpoint_envelopes(self, min_tree_size: int) -> list[bytes]:
        """The broker's checkpoints of at least this tree size."""

    def consistency_proof(self, first_size: int, second_size: int) -> list[bytes]: ...

    def add_cosignature(self, tree_size: int, envelope: bytes) -> None: ...

    def offer_cosignature(self, tree_size: int, envelope: bytes) -> None:
        """Like add_cosignature, expecting a refusal: logs it and never raises for one."""


@dataclass(frozen=True, kw_only=True, slots=True)
class PollOutcome:
    cosigned: TreeHead | None
    alarms: tuple[WitnessAlarm, ...]


class Witness:
    def __init__(
        self,
        *,
        path: Path,
        key: SigningKey,
        log_key: VerifyKey,
        clock: Callable[[], float],
        on_alarm: Callable[[WitnessAlarm], None] = lambda alarm: None,
    ) -> None:
        self._path = path
        self._key = key
        self._log_key = log_key
        self._clock = clock
        self._on_alarm = on_alarm
        copy = read_witness_log(path, log_key) if path.exists() else None
        if copy is not None and copy.problems:
            raise ValueError(f"the witness file does not verify: {'; '.join(copy.problems)}")
        self._roots = {
            c.head.tree_size: c.head.root_hash for c in (copy.checkpoints if copy else ())
        }
        latest = copy.latest if copy else None
        self._latest: TreeHead | None = latest.head if latest else None
        self._latest_cosignature = latest.cosignature if latest else b""
        self.alarms: list[WitnessAlarm] = list(copy.alarms) if copy else []

    @property
    def latest(self) -> TreeHead | None:
        """The newest tree head this witness cosigned."""
        return self._latest

    def poll(self, source: LogSource) -> PollOutcome:
        """One round; returns what was cosigned (if anything) and the alarms raised."""
        raised: list[WitnessAlarm] = []
        since = self._latest.tree_size if self._latest else 0
        heads = self._verified_heads(source.checkpoint_envelopes(since), raised)
        raised += self._forks_and_rollbacks(heads)
        cosigned = None
        if not raised and not self.alarms and heads:
            newest_head, newest_envelope = max(heads, key=lambda h: h[0].tree_size)
            if self._latest is None or newest_head.tree_size > self._latest.tree_size:
                cosigned = self._advance(source, newest_head, newest_envelope, raised)
        if raised and self._latest is not None:
            # Tell the broker too: offered again, the cosignature of the newest head this
            # witness holds is refused there as a root mismatch (a fork) or as no such
            # checkpoint (a rollback), which the broker counts and audits for its operators.
            source.offer_cosignature(self._latest.tree_size, self._latest_cosignature)
        return PollOutcome(cosigned=cosigned, alarms=tuple(raised))

    def _verified_heads(
        self, envelopes: Sequence[bytes], raised: list[WitnessAlarm]
    ) -> list[tuple[TreeHead, bytes]]:
        heads = []
        for envelope in envelopes:
            try:
                heads.append((open_checkpoint(envelope, self._log_key), envelope))
            except TreeHeadError as exc:
                raised.append(
                    self._alarm("bad_checkpoint", 0, f"a listed checkpoint: {exc}", envelope)
                )
        return heads

    def _forks_and_rollbacks(self, heads: list[tuple[TreeHead, bytes]]) -> list[WitnessAlarm]:
        raised = []
        for head, envelope in heads:
            mine = self._roots.get(head.tree_size)
            if mine is not None and mine != head.root_hash:
                raised.append(
                    self._alarm(
                        "fork",
                        head.tree_size,
                        f"the broker now shows a checkpoint of tree size {head.tree_size} with "
                        f"root {head.root_hash[:16]}..., but this witness cosigned root "
                        f"{mine[:16]}... for that size: two signed heads of one size",
                        envelope,
                    )
                )
        latest = self._latest
        if latest is not None:
            newest = max((h.tree_size for h, _ in heads), default=0)
            sizes = {h.tree_size for h, _ in heads}
            if newest < latest.tree_size or latest.tree_size not in sizes:
                raised.append(
                    self._alarm(
                        "rollback",
                        latest.tree_size,
                        f"the broker's newest checkpoint has tree size {newest} and the "
                        f"checkpoint of tree size {latest.tree_size} this witness cosigned is "
                        "gone: the log was rolled back or its checkpoints deleted",
                    )
                )
        return raised

    def _advance(
        self, source: LogSource, head: TreeHead, envelope: bytes, raised: list[WitnessAlarm]
    ) -> TreeHead | None:
        old_size = self._latest.tree_size if self._latest else 0
        old_root = bytes.fromhex(self._latest.root_hash) if self._latest else EMPTY_ROOT
        proof = source.consistency_proof(old_size, head.tree_size)
        if not verify_consistency(
            old_size, head.tree_size, old_root, bytes.fromhex(head.root_hash), proof
        ):
            raised.append(
                self._alarm(
                    "inconsistent",
                    head.tree_size,
                    f"the broker's checkpoint of tree size {head.tree_size} does not extend "
                    f"the one of tree size {old_size} this witness cosigned (the consistency "
                    "proof fails): the log was rewritten",
                    envelope,
                )
            )
            return None
        now = self._clock()
        cosignature = cosign(head, log_key_id=self._log_key.key_id, witnessed_at=now, key=self._key)
        # Remember before telling: a crash after this line re-sends, never forgets.
        append_record(self._path, checkpoint_record(head, envelope, cosignature, now))
        self._roots[head.tree_size] = head.root_hash
        self._latest = head
        self._latest_cosignature = cosignature
        source.add_cosignature(head.tree_size, cosignature)
        log.info("cosigned the checkpoint of tree size %d", head.tree_size)
        return head

    def _alarm(
        self, kind: str, tree_size: int, message: str, evidence: bytes = b""
    ) -> WitnessAlarm:
        known = next((a for a in self.alarms if (a.kind, a.tree_size) == (kind, tree_size)), None)
        if known is not None:
            return known  # already on file: one record per fork or rollback, not one per poll
        now = self._clock()
        append_record(self._path, alarm_record(kind, tree_size, message, now, evidence))
        alarm = WitnessAlarm(kind=kind, tree_size=tree_size, message=message, at=now)
        self.alarms.append(alarm)
        log.error("AUDIT WITNESS ALARM (%s): %s", kind, message)
        self._on_alarm(alarm)
        return alarm
