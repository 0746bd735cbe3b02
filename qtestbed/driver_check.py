"""`qtestbed driver check`: a conformance battery for a driver and whatever backend its settings
select, run against a real broker process it starts on 127.0.0.1 (see `driver_check_setup`)
and real driver processes started from a copy of the settings.

With the settings as given: the attestation round trip, correctness within the error
figures the device describes (GHZ-3, or on a classical reversible device an X-CX chain:
`driver_check_probe`) (receipt verified offline), per-shot memory (as many shots as
asked, its histogram the counts, bound by the receipt), a circuit wider than the device and an
invalid one refused with a message saying why. With each run padded past the broker's heartbeat
window (`min_execution_seconds`): the driver keeps its lease through a long run by heartbeats,
a cancelled running job ends CANCELLED with no result and the driver takes the next job, and a
driver killed mid-job and started again gives the job back and completes it once.

Every wait is bounded; a check that cannot finish fails with what it waited for.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from qtestbed.client import Client, QtestbedError, memory_of
from qtestbed.driver_check_probe import Probe
from qtestbed.driver_check_setup import CheckSetup
from qtestbed.testing import eventually
from qtestbed.v1 import jobs_pb2

CORRECTNESS_SHOTS = 2000
MEMORY_SHOTS = 200
WAIT_S = 60.0
INVALID_QASM = b'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[2];\nnot_a_gate q[0];\n'


@dataclass(frozen=True, slots=True)
class Outcome:
    name: str
    passed: bool
    detail: str


class CheckFailed(Exception):
    """A check's finding: the detail says what was expected and what happened."""


def state(job: jobs_pb2.Job) -> str:
    return jobs_pb2.JobState.Name(job.state).removeprefix("JOB_STATE_")


def wait_for(client: Client, job_id: str, *states: str) -> jobs_pb2.Job:
    def reached() -> jobs_pb2.Job | None:
        job = client.get_job(job_id)
        return job if state(job) in states else None

    try:
        return eventually(reached, timeout=WAIT_S, what=f"job {job_id} to be {'/'.join(states)}")
    except TimeoutError:
        job = client.get_job(job_id)
        raise CheckFailed(
            f"job {job_id} is {state(job)} ({job.reason or 'no reason given'}) after "
            f"{WAIT_S:.0f} s; expected {' or '.join(states)}"
        ) from None


def refusal_in_logs(root: Path) -> str:
    """The broker's reasons for refusing the driver, as the driver logged them in `root` (the
    check's facility, logs and all, goes when the check ends), or what the driver said last."""
    lines: list[str] = []
    for log in sorted(root.glob("driver-*.log")):
        lines += log.read_text(errors="replace").splitlines()
    refused = [line for line in lines if "attestation refused:" in line]
    if refused:
        return refused[-1][refused[-1].index("attestation refused:") :]
    return f"the driver's last words: {lines[-1]!r}" if lines else "the driver logged nothing"


class Battery:
    def __init__(self, setup: CheckSetup) -> None:
        self.setup = setup
        self.device = setup.config.device
        self.probe = Probe(self.device)  # the circuits this device can run
        # Longer than the broker's heartbeat window, so a run survives only by heartbeats.
        window = setup.config.heartbeat_seconds * setup.config.heartbeat_misses
        self.long_run = window + 1.0
        self._driver: subprocess.Popen[bytes] | None = None
        self._alice: Client | None = None

    @property
    def alice(self) -> Client:
        assert self._alice is not None
        return self._alice

    def run(self) -> list[Outcome]:
        fac = self.setup.facility
        fast = self.setup.driver_settings("fast")
        slow = self.setup.driver_settings("long", min_execution_seconds=self.long_run)
        try:
            fac.start_broker_process()
            self._alice = fac.client("alice")
            self._driver = fac.start_driver(self.device.device_id, config=fast)
            outcomes = [self._check("attestation", self.attestation)]
            if not outcomes[0].passed:
                return outcomes
            for name, check in self._quick_checks():
                outcomes.append(self._check(name, check))
            self._restart(slow, kill=False)
            for name, check in self._long_checks(slow):
                outcomes.append(self._check(name, check))
            return outcomes
        finally:
            fac.stop()
            fast.unlink(missing_ok=True)
            slow.unlink(missing_ok=True)

    def _quick_checks(self) -> list[tuple[str, Callable[[], str]]]:
        return [
            ("correctness", self.correctness),
            ("memory", self.memory),
            ("too-large", self.too_large),
            ("invalid", self.invalid),
        ]

    def _long_checks(self, slow: Path) -> list[tuple[str, Callable[[], str]]]:
        return [
            ("heartbeats", self.heartbeats),
            ("cancel", self.cancel),
            ("restart", lambda: self.restart_mid_job(slow)),
        ]

    @staticmethod
    def _check(name: str, check: Callable[[], str]) -> Outcome:
        try:
            return Outcome(name, True, check())
        except CheckFailed as exc:
            return Outcome(name, False, str(exc))
        except (QtestbedError, TimeoutError, RuntimeError) as exc:
            return Outcome(name, False, f"{type(exc).__name__}: {exc}")

    def _restart(self, settings: Path, *, kill: bool) -> None:
        assert self._driver is not None
        self._driver.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        self._driver.wait(30)
        fac = self.setup.facility
        self._driver = fac.start_driver(self.device.device_id, config=settings)
        fac.wait_available(self.alice, self.device.device_id, timeout=WAIT_S)

    # --- the checks: each returns what it saw, or raises CheckFailed ---------------------------

    def attestation(self) -> str:
        began = time.monotonic()
        try:
            self.setup.facility.wait_available(self.alice, self.device.device_id, timeout=WAIT_S)
        except TimeoutError:
            refusal = refusal_in_logs(self.setup.facility.root)
            raise CheckFailed(
                f"the driver did not attest within {WAIT_S:.0f} s: {refusal}"
            ) from None
        return f"attested to a local broker in {time.monotonic() - began:.1f} s"

    def _run(
        self, payload: bytes, shots: int, *, memory: bool = False
    ) -> tuple[jobs_pb2.Job, jobs_pb2.JobResult]:
        job_id = self.alice.submit(
            payload, device_id=self.device.device_id, shots=shots, memory=memory
        ).job.job_id
        job = wait_for(self.alice, job_id, "COMPLETED", "FAILED", "DENIED", "CANCELLED")
        if state(job) != "COMPLETED":
            raise CheckFailed(f"job ended {state(job)}: {job.reason}")
        result = self.alice.result(job_id)
        problems = self.alice.verify_result(result, job)
        if problems:
            raise CheckFailed(f"the receipt does not verify: {'; '.join(problems)}")
        return job, result

    def correctness(self) -> str:
        n = min(3, self.device.num_qubits)
        _job, result = self._run(self.probe.qasm(n), CORRECTNESS_SHOTS)
        right, seen, expected = self.probe.judge(dict(result.counts), n, CORRECTNESS_SHOTS)
        if not right:
            raise CheckFailed(
                f"{self.probe.name(n)} is wrong beyond the device's own error figures: {seen}; "
                f"expected {expected}"
            )
        return f"{self.probe.name(n)}: {seen} ({expected}); receipt verified"

    def memory(self) -> str:
        n = min(2, self.device.num_qubits)
        _job, result = self._run(self.probe.qasm(n), MEMORY_SHOTS, memory=True)
        shots = memory_of(result)
        if shots is None:
            raise CheckFailed("asked for per-shot memory, the result has none")
        if (shots.shots, shots.width) != (MEMORY_SHOTS, n):
            raise CheckFailed(
                f"per-shot memory holds {shots.shots} shots of {shots.width} bits; "
                f"expected {MEMORY_SHOTS} of {n}"
            )
        if shots.histogram() != dict(result.counts):
            raise CheckFailed("the per-shot memory's histogram is not the counts")
        return f"{MEMORY_SHOTS} shots in shot order, histogram = counts, bound by the receipt"

    def too_large(self) -> str:
        wide = self.device.num_qubits + 1
        return self._refused(self.probe.qasm(wide), f"a {wide}-qubit circuit", "qubit")

    def invalid(self) -> str:
        return self._refused(INVALID_QASM, "a circuit with an unknown gate", "")

    def _refused(self, payload: bytes, what: str, must_say: str) -> str:
        try:
            job_id = self.alice.submit(
                payload, device_id=self.device.device_id, shots=10
            ).job.job_id
        except QtestbedError as exc:
            said = f"{exc.code}: {exc.message}"
            if must_say not in exc.message.lower():
                raise CheckFailed(f"{what} was refused, but without saying why: {said}") from None
            return f"{what} refused at submission: {said}"
        job = wait_for(self.alice, job_id, "COMPLETED", "FAILED", "DENIED", "CANCELLED")
        if state(job) == "COMPLETED":
            raise CheckFailed(f"{what} ran to completion; it must be refused")
        if must_say not in job.reason.lower():
            raise CheckFailed(f"{what} ended {state(job)} without saying why: {job.reason!r}")
        return f"{what} ended {state(job)}: {job.reason}"

    def heartbeats(self) -> str:
        job_id = self.alice.submit(
            self.probe.qasm(2), device_id=self.device.device_id, shots=10
        ).job.job_id
        wait_for(self.alice, job_id, "RUNNING")
        began = time.monotonic()
        job = wait_for(self.alice, job_id, "COMPLETED", "FAILED", "QUEUED")
        took = time.monotonic() - began
        if state(job) != "COMPLETED" or job.attempts != 1:
            raise CheckFailed(
                f"a {self.long_run:.1f} s run ended {state(job)} after {job.attempts} "
                f"attempt(s) ({job.reason}): the driver must heartbeat while it runs"
            )
        return f"a {took:.1f} s run kept its lease (attempt 1) past the heartbeat window"

    def cancel(self) -> str:
        device = self.device.device_id
        first = self.alice.submit(self.probe.qasm(2), device_id=device, shots=10).job.job_id
        wait_for(self.alice, first, "RUNNING")
        self.alice.cancel(first, "conformance check")
        cancelled = wait_for(self.alice, first, "CANCELLED", "COMPLETED")
        if state(cancelled) != "CANCELLED":
            raise CheckFailed(f"a cancelled running job ended {state(cancelled)}")
        try:
            self.alice.result(first)
        except QtestbedError:
            pass
        else:
            raise CheckFailed("a cancelled job has a result")
        self._run(self.probe.qasm(2), 10)  # the driver takes the next job
        return "a running job cancelled: CANCELLED, no result; the next job completed"

    def restart_mid_job(self, settings: Path) -> str:
        device = self.device.device_id
        job_id = self.alice.submit(self.probe.qasm(2), device_id=device, shots=10).job.job_id
        wait_for(self.alice, job_id, "RUNNING")
        self._restart(settings, kill=True)
        job = wait_for(self.alice, job_id, "COMPLETED", "FAILED")
        if state(job) != "COMPLETED" or job.attempts != 2:
            raise CheckFailed(
                f"after the driver was killed mid-job and restarted, the job ended "
                f"{state(job)} after {job.attempts} attempt(s); expected COMPLETED on attempt 2"
            )
        problems = self.alice.verify_result(self.alice.result(job_id), job)
        if problems:
            raise CheckFailed(f"the receipt does not verify: {'; '.join(problems)}")
        return "killed mid-job: the job went back to the queue and completed once, on attempt 2"
