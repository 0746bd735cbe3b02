"""The supervising process of a broker run as worker processes (`[server] workers = N`).

It starts every worker (`qtestbed broker --worker K` with the addresses `plan` gave it), waits
until each reports its ports, and then restarts any worker that exits, with a growing pause
for one that keeps dying at once. On SIGTERM or SIGINT it stops every worker (SIGTERM, then
SIGKILL after the grace period) before it exits; SIGHUP is passed on to each (reload). Each
worker's standard input is a pipe from here that nothing writes: when this process dies,
however abruptly, the pipe closes and the worker stops itself, so no worker outlives it.

The supervisor opens no store, key or client connection: it only runs processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from broker.workers.plan import WorkerPlan, pinned

log = logging.getLogger(__name__)

# A worker that ran at least this long before exiting is restarted at once; one that dies
# sooner waits twice as long each time, up to the most.
_STEADY_SECONDS = 10.0
_FIRST_PAUSE_S = 0.2
_MOST_PAUSE_S = 10.0
_STOP_GRACE_S = 20.0

# The command that runs one worker, from its plan.
WorkerCommand = Callable[[WorkerPlan], Sequence[str]]


class WorkerFailed(RuntimeError):
    """A worker exited before it was ready: the broker does not start."""


class Supervisor:
    def __init__(self, plans: Sequence[WorkerPlan], command: WorkerCommand) -> None:
        self._plans = list(plans)
        self._command = command
        self._procs: dict[int, asyncio.subprocess.Process] = {}
        self._stopping = False
        self._watchers: list[asyncio.Task[None]] = []

    async def start(self, within_seconds: float) -> list[dict[str, str]]:
        """Start every worker and wait until each is ready; what each reported (its ready
        file). A worker that exits first stops them all: WorkerFailed."""
        for plan in self._plans:
            plan.ready_file.unlink(missing_ok=True)
        try:
            # Worker 0 first, alone: on an empty store it creates the schema and seeds the
            # facility's records, which the others then find there instead of racing it.
            reports = [await self._ready(await self._spawn(self._plans[0]), within_seconds)]
            for plan in self._plans[1:]:
                await self._spawn(plan)
            reports += [await self._ready(plan, within_seconds) for plan in self._plans[1:]]
        except BaseException:
            await self.stop()
            raise
        # Restarted, a worker binds what it bound first: drivers and scrapers find it there.
        self._plans = [pinned(p, report) for p, report in zip(self._plans, reports, strict=True)]
        self._watchers = [asyncio.create_task(self._keep(plan)) for plan in self._plans]
        return reports

    def pids(self) -> dict[int, int]:
        """worker index -> the pid of its current process."""
        return {index: proc.pid for index, proc in self._procs.items()}

    def hang_up(self) -> None:
        """SIGHUP: every worker reloads its files."""
        for proc in self._procs.values():
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGHUP)

    async def stop(self) -> None:
        self._stopping = True
        for task in self._watchers:
            task.cancel()
        procs = list(self._procs.values())
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        for proc in procs:
            try:
                await asyncio.wait_for(proc.wait(), _STOP_GRACE_S)
            except TimeoutError:
                log.warning("worker pid %d did not stop in %.0f s: killed", proc.pid, _STOP_GRACE_S)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
            if proc.stdin is not None:
                proc.stdin.close()

    async def _spawn(self, plan: WorkerPlan) -> WorkerPlan:
        proc = await asyncio.create_subprocess_exec(
            *self._command(plan),
            stdin=asyncio.subprocess.PIPE,  # the lifeline: closed when this process ends
            stdout=asyncio.subprocess.DEVNULL,
            # Its own session: a terminal's Ctrl-C reaches the supervisor, which stops the
            # workers in order, rather than every process at once.
            start_new_session=True,
        )
        self._procs[plan.index] = proc
        log.info("worker %d started, pid %d", plan.index, proc.pid)
        return plan

    async def _ready(self, plan: WorkerPlan, within_seconds: float) -> dict[str, str]:
        proc = self._procs[plan.index]
        deadline = time.monotonic() + within_seconds
        while not _readable(plan.ready_file):
            if proc.returncode is not None:
                raise WorkerFailed(
                    f"worker {plan.index} exited with code {proc.returncode} before it was "
                    "ready; its log above says why"
                )
            if time.monotonic() > deadline:
                raise WorkerFailed(f"worker {plan.index} not ready within {within_seconds:.0f} s")
            await asyncio.sleep(0.05)
        report: dict[str, str] = json.loads(plan.ready_file.read_text())
        return report

    async def _keep(self, plan: WorkerPlan) -> None:
        """Restart the worker of `plan` whenever it exits, until the supervisor stops."""
        pause = _FIRST_PAUSE_S
        while True:
            proc = self._procs[plan.index]
            began = time.monotonic()
            code = await proc.wait()
            if self._stopping:
                return
            if time.monotonic() - began >= _STEADY_SECONDS:
                pause = _FIRST_PAUSE_S
            log.warning(
                "worker %d (pid %d) exited with code %s; starting it again in %.1f s",
                plan.index,
                proc.pid,
                code,
                pause,
            )
            if proc.stdin is not None:
                proc.stdin.close()
            await asyncio.sleep(pause)
            pause = min(pause * 2, _MOST_PAUSE_S)
            if self._stopping:
                return
            await self._spawn(plan)


def _readable(path: Path) -> bool:
    return path.exists() and path.stat().st_size > 0
