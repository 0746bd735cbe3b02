"""Make signed audit checkpoints as the log grows, without re-reading it each time.

The checkpointer keeps the log's Merkle state (O(log n) hashes) and the chain head in memory.
A periodic task feeds it the entries written since the last call and asks it for a checkpoint
when one is due:

    checkpointer = AuditCheckpointer(key, existing=store.checkpoints())
    checkpointer.feed(iter_entries(store))                 # once, at start-up
    ...
    checkpointer.feed(iter_entries(store, after_seq=checkpointer.last_seq))   # every tick
    if checkpointer.due_at(clock.now()):
        store.add_checkpoint(checkpointer.make(clock.now()))

Everything fed is verified first (chain links, entry hashes, and the roots of the existing
checkpoints as their sizes are reached), so the broker never signs over a log that already
fails verification: `feed` raises `AuditLogError`, and the checkpointer then refuses to sign
until it is replaced, because an operator has to look at the log (`qtestbed audit verify`).

It certifies what it reads, so feed it every tick (a database forgery made before an entry is
fed gets signed) and make a last checkpoint at shutdown (the tail is re-read, and so would be
certified, on the next start). Not thread-safe: drive one instance from one task.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from attestation.keys import SigningKey
from broker.audit.checkpoints import sign_checkpoint
from broker.audit.model import AuditEntry, Checkpoint
from broker.audit.stored import MalformedRow
from broker.audit.verify import LogVerifier


class AuditLogError(Exception):
    """The log or its checkpoints fail verification; `problems` says how."""

    def __init__(self, problems: Sequence[str], first_bad_seq: int | None = None) -> None:
        super().__init__("; ".join(problems))
        self.problems = list(problems)
        self.first_bad_seq = first_bad_seq


class AuditCheckpointer:
    """Signs a checkpoint every `every_entries` new entries or `every_seconds`, whichever first.

    `existing` are the checkpoints already stored (smallest tree first): they are checked as
    the log is fed and the next checkpoint must grow past the largest.
    """

    def __init__(
        self,
        key: SigningKey,
        *,
        every_entries: int = 100,
        every_seconds: float = 60,
        existing: Sequence[Checkpoint] = (),
    ) -> None:
        if every_entries < 1:
            raise ValueError("every_entries must be at least 1")
        if not every_seconds > 0:
            raise ValueError("every_seconds must be positive")
        self._key = key
        self._every_entries = every_entries
        self._every_seconds = float(every_seconds)
        self._verifier = LogVerifier(existing, key.public_key)
        self._numbered = len(existing)
        self._failed: list[str] = self._verifier.problems
        self._last_size = max((c.tree_size for c in existing), default=0)
        self._last_at = max((c.at for c in existing), default=-math.inf)

    @property
    def tree_size(self) -> int:
        """Entries fed so far (the log's size as far as this checkpointer knows)."""
        return self._verifier.tree_size

    @property
    def last_seq(self) -> int:
        """The seq of the last entry fed (0 before any): page the store after it."""
        return self._verifier.last_seq

    @property
    def root_hash(self) -> str:
        return self._verifier.root().hex()

    @property
    def last_checkpoint_size(self) -> int:
        return self._last_size

    def due(self, entries_since_last: int, seconds_since_last: float) -> bool:
        """A checkpoint is due when there is anything new and either threshold is reached."""
        if entries_since_last <= 0:
            return False
        return (
            entries_since_last >= self._every_entries or seconds_since_last >= self._every_seconds
        )

    def due_at(self, now: float) -> bool:
        """`due` for what this checkpointer has been fed, at time `now`."""
        return self.due(self.tree_size - self._last_size, now - self._last_at)

    def feed(self, entries: Iterable[AuditEntry | MalformedRow]) -> None:
        """Verify and append the entries that follow the last one fed, in seq order.

        Raises AuditLogError on the first problem (and every time after): an entry that does
        not continue the chain, or a stored checkpoint the log no longer matches.
        """
        self._raise_if_failed()
        for entry in entries:
            self._verifier.add_all((entry,))
            found = self._verifier.problems
            if found:
                self._failed = found
                self._raise_if_failed()

    def check_complete(self) -> None:
        """AuditLogError when a stored checkpoint covers more entries than were fed: after
        feeding the whole log, that means entries were lost (truncated, or restored)."""
        self._raise_if_failed()
        beyond = self._verifier.pending_beyond()
        if beyond > self.tree_size:
            raise AuditLogError(
                [
                    f"a stored checkpoint covers {beyond} entries but the log holds "
                    f"{self.tree_size}: entries after seq {self.last_seq} are missing"
                ],
                self.tree_size + 1,
            )

    def make(self, now: float) -> Checkpoint:
        """Sign the current tree head at time `now`; the caller stores it (`add_checkpoint`).

        Raises ValueError when nothing was fed since the last checkpoint (tree sizes must
        grow), and AuditLogError when verification failed or a stored checkpoint covers more
        entries than were fed (the log was truncated or restored from a backup).
        """
        self._raise_if_failed()
        beyond = self._verifier.pending_beyond()
        if beyond > self.tree_size:
            raise AuditLogError(
                [
                    f"a stored checkpoint covers {beyond} entries but only {self.tree_size} "
                    "were fed: feed the rest, or the log lost entries"
                ]
            )
        if self.tree_size <= self._last_size:
            raise ValueError(f"nothing new since the checkpoint of tree size {self._last_size}")
        checkpoint = sign_checkpoint(self.tree_size, self.root_hash, now, self._key)
        self._numbered += 1
        self._verifier.expect(self._numbered, checkpoint)
        self._last_size = checkpoint.tree_size
        self._last_at = checkpoint.at
        return checkpoint

    def _raise_if_failed(self) -> None:
        if self._failed:
            raise AuditLogError(self._failed, self._verifier.first_bad_seq())
