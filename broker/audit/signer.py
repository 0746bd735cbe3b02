"""The broker's periodic audit signing: feed new entries to the checkpointer on the store's
thread and store a signed checkpoint whenever one is due (and at shutdown)."""

from __future__ import annotations

import logging

from attestation.keys import SigningKey
from broker.audit.checkpointer import AuditCheckpointer, AuditLogError
from broker.audit.model import Checkpoint
from broker.audit.stored import iter_stored
from broker.clock import Clock
from broker.metrics import BrokerMetrics
from broker.settings import TimingSettings
from broker.store import CheckpointSuperseded, StoreError
from broker.store.runner import StoreRunner

log = logging.getLogger(__name__)


class DamagedAuditLog(Exception):
    """The stored audit log fails verification at start: names the first bad entry and what
    to do, for the operator to read (never a traceback)."""

    def __init__(self, problems: list[str], first_bad_seq: int | None) -> None:
        where = f"first bad entry seq {first_bad_seq}" if first_bad_seq else "its checkpoints"
        shown = "; ".join(problems[:3]) + ("; ..." if len(problems) > 3 else "")
        super().__init__(
            f"the audit log in the store is damaged ({where}): {shown}. The broker will not "
            "start on it. Run 'qtestbed audit verify --config BROKER_TOML' (with --witness "
            "FILE if a witness keeps a copy) for the full verdict, then restore the database "
            "from a backup that verifies, or keep this copy for investigation"
        )
        self.problems = problems
        self.first_bad_seq = first_bad_seq


class CheckpointSigner:
    def __init__(
        self,
        *,
        key: SigningKey,
        runner: StoreRunner,
        clock: Clock,
        metrics: BrokerMetrics,
        timing: TimingSettings,
    ) -> None:
        self._key = key
        self._runner = runner
        self._clock = clock
        self._metrics = metrics
        self._timing = timing
        self._checkpointer: AuditCheckpointer | None = None

    async def start(self) -> None:
        """Load the stored checkpoints and verify the whole log against them before anything
        new is signed. A log that fails is `DamagedAuditLog`: the broker does not start on it,
        since it would run without checkpoints and hide what was done to it."""
        self._checkpointer = AuditCheckpointer(
            self._key,
            every_entries=self._timing.checkpoint_every_entries,
            every_seconds=self._timing.checkpoint_every_seconds,
            existing=await self._runner.call(self._runner.store.checkpoints),
        )
        try:
            made = await self._stored_step()
            self._checkpointer.check_complete()
        except AuditLogError as exc:
            raise DamagedAuditLog(exc.problems, exc.first_bad_seq) from None
        if made is not None:
            self._metrics.checkpoints.inc()

    async def _stored_step(self) -> Checkpoint | None:
        try:
            return await self._runner.call(self._step, False)
        except StoreError as exc:
            _not_stored(exc)
            return None

    async def tick(self, *, force: bool = False) -> None:
        try:
            made = await self._runner.call(self._step, force)
        except AuditLogError as exc:
            # The log no longer matches what was signed: never sign over it; shout instead.
            log.error("audit log integrity check failed, not checkpointing: %s", exc)
            return
        except StoreError as exc:
            _not_stored(exc)
            return
        if made is not None:
            self._metrics.checkpoints.inc()

    def _step(self, force: bool) -> Checkpoint | None:
        """On the store's thread: feed the new entries, sign a checkpoint when one is due."""
        checkpointer = self._checkpointer
        if checkpointer is None:
            raise RuntimeError("CheckpointSigner.start() was not awaited")
        store = self._runner.store
        checkpointer.feed(iter_stored(store, after_seq=checkpointer.last_seq))
        now = self._clock.now()
        has_new = checkpointer.tree_size > checkpointer.last_checkpoint_size
        if not (checkpointer.due_at(now) or (force and has_new)):
            return None
        checkpoint = checkpointer.make(now)
        store.add_checkpoint(checkpoint)
        return checkpoint


def _not_stored(exc: StoreError) -> None:
    """A checkpoint the store did not take. With several broker processes on one database,
    another one signing this tree size first is routine (every process checkpoints the one
    log), and the entries are covered either way: not worth a warning each time, several a
    second under load. Anything else (the store away) is."""
    if isinstance(exc, CheckpointSuperseded):
        log.debug("checkpoint not stored (%s): another process signed first", exc)
    else:
        log.warning("checkpoint not stored (%s); the next one will cover these entries", exc)
