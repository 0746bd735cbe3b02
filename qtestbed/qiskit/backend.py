"""`QtestbedBackend`: one broker device as a Qiskit `BackendV2`.

The target comes from the device description the broker serves (`refresh()` reads it again);
`run` submits each circuit as its own broker job, all before it returns, and gives back one
`QtestbedJob` for them. Run options are Qiskit's standard names (see `qtestbed.qiskit.options`);
an unknown name or a value the facility cannot honour is refused, never ignored.

A backend holds its device description and the connection's profile, not a channel: it
survives `copy.deepcopy` and `pickle`, and a copy reconnects the first time it is used.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from contextlib import suppress
from numbers import Integral
from typing import TYPE_CHECKING

from qiskit import QuantumCircuit
from qiskit.providers import BackendV2, JobError, Options
from qiskit.transpiler import Target

from attestation.shot_memory import ShotMemoryError, check_size
from qtestbed.client import QtestbedError
from qtestbed.qiskit.connection import Connection
from qtestbed.qiskit.encoding import encode_circuit
from qtestbed.qiskit.job import QtestbedJob, Submitted
from qtestbed.qiskit.layout import ClassicalLayout
from qtestbed.qiskit.options import RunOptions, check_option_names, default_options, resolve
from qtestbed.qiskit.target import build_target
from qtestbed.v1 import devices_pb2, jobs_pb2

if TYPE_CHECKING:
    from qtestbed.qiskit.session import QtestbedSession


DEFAULT_MAX_CIRCUITS: int | None = None  # no limit of our own: quotas count jobs
PRIORITIES = {  # keyed by qtestbed.qiskit.options.PRIORITY_NAMES
    "low": jobs_pb2.JOB_PRIORITY_LOW,
    "normal": jobs_pb2.JOB_PRIORITY_NORMAL,
    "high": jobs_pb2.JOB_PRIORITY_HIGH,
}


class QtestbedBackend(BackendV2):  # type: ignore[misc]
    def __init__(
        self,
        device: devices_pb2.Device,
        connection: Connection,
        *,
        provider: object = None,
        max_circuits: int | None = DEFAULT_MAX_CIRCUITS,
    ) -> None:
        super().__init__(
            provider=provider,
            name=device.device_id,
            description=f"{device.backend} device at tier {device.tier} through qtestbed",
            backend_version=device.calibration_digest or "unattested",
        )
        self._connection = connection
        self._max_circuits = max_circuits
        self._device = device
        self._target = build_target(device)

    @classmethod
    def _default_options(cls) -> Options:
        return default_options()

    def set_options(self, **fields: object) -> None:
        """Set default run options (Qiskit's names); unknown names and values the facility
        cannot honour are refused with the accepted ones named."""
        check_option_names(fields)
        resolve(self.options, fields)  # refuses bad values before any is set
        super().set_options(**fields)

    @property
    def target(self) -> Target:
        return self._target

    @property
    def max_circuits(self) -> int | None:
        """Circuits per `run` call, None for no limit. Each circuit is one broker job, counted
        against the caller's and the project's quotas; a batch the broker refuses part of is
        withdrawn whole."""
        return self._max_circuits

    @property
    def device(self) -> devices_pb2.Device:
        """The broker's description of the device when this backend was made or refreshed:
        tier, availability, queue depth, attestation, calibration and export class."""
        return self._device

    @property
    def connection(self) -> Connection:
        return self._connection

    def refresh(self) -> devices_pb2.Device:
        """Read the device again (state, queue, calibration) and rebuild the target."""
        self._device = self._connection.client.device(self.name)
        self._target = build_target(self._device)
        self.backend_version = self._device.calibration_digest or "unattested"
        return self._device

    def run(
        self,
        run_input: QuantumCircuit | Sequence[QuantumCircuit],
        *,
        session: QtestbedSession | None = None,
        **options: object,
    ) -> QtestbedJob:
        """Submit one circuit or a batch and return the job for all of them.

        `options` override `backend.options` for this run: Qiskit's `shots`, `memory` (every
        shot's outcome, in `Result.get_memory()`), `meas_level` (2 only), `meas_return`,
        `init_qubits` (True only), `rep_delay` (None only), `seed_simulator` (None only) and
        this facility's `project` (may be omitted when the caller belongs to one) and
        `priority` ("low", "normal" or "high"). `session` must be open on this device.
        Circuits must be bound and measure into classical registers; transpile them for this
        backend first.
        """
        check_option_names(options)
        chosen = resolve(self.options, options)
        circuits = [run_input] if isinstance(run_input, QuantumCircuit) else list(run_input)
        return self._submit(
            [(circuit, chosen.shots) for circuit in circuits], chosen, session=session
        )

    def run_batch(
        self,
        items: Sequence[tuple[QuantumCircuit, int]],
        *,
        project: str | None = None,
        priority: str | None = None,
        session: QtestbedSession | None = None,
        memory: bool | None = None,
    ) -> QtestbedJob:
        """Like `run`, with shots per circuit. The broker queues every circuit or none (one
        SubmitJobs call); a refusal names the circuit's place in the batch."""
        overrides: dict[str, object] = {}
        if memory is not None:
            overrides["memory"] = memory
        if project is not None:
            overrides["project"] = project
        if priority is not None:
            overrides["priority"] = priority
        return self._submit(items, resolve(self.options, overrides), session=session)

    def _submit(
        self,
        items: Sequence[tuple[QuantumCircuit, int]],
        chosen: RunOptions,
        *,
        session: QtestbedSession | None,
    ) -> QtestbedJob:
        if not items:
            raise ValueError("nothing to run: no circuits given")
        if self._max_circuits is not None and len(items) > self._max_circuits:
            raise ValueError(
                f"{len(items)} circuits in one run; this backend takes at most "
                f"{self._max_circuits} (max_circuits)"
            )
        for _, shots in items:
            if isinstance(shots, bool) or not isinstance(shots, Integral) or shots < 1:
                raise ValueError(f"shots must be a positive integer, got {shots!r}")
        session_id = self._session_id(session)
        template = jobs_pb2.SubmitJobRequest(
            device_id=self.name,
            project=chosen.project,
            priority=_priority(chosen.priority),
            session_id=session_id,
            memory=chosen.memory,
        )
        encoded = [(encode_circuit(circuit), circuit, shots) for circuit, shots in items]
        if chosen.memory:
            for _, circuit, shots in encoded:
                try:
                    check_size(int(shots), circuit.num_clbits)
                except ShotMemoryError as exc:
                    raise ValueError(f"circuit {circuit.name!r}: {exc}") from None
        requests = []
        for circuit, _, shots in encoded:
            request = jobs_pb2.SubmitJobRequest()
            request.CopyFrom(template)
            request.circuit.CopyFrom(circuit.message())
            request.shots = int(shots)
            request.idempotency_key = uuid.uuid4().hex
            requests.append(request)
        # One SubmitJobs call: the broker queues the whole batch or none of it.
        jobs = self._connection.submit_batch(requests)
        submitted = [
            Submitted(
                job=job,
                circuit=circuit,
                layout=ClassicalLayout.of(original),
                shots=int(shots),
                memory=chosen.memory,
            )
            for job, (circuit, original, shots) in zip(jobs, encoded, strict=True)
        ]
        for job in jobs:
            if job.device_id != self.name or job.session_id != session_id:
                self._withdraw(submitted, JobError("unexpected placement"))
                raise JobError(
                    f"the broker queued job {job.job_id} on device {job.device_id!r} in "
                    f"session {job.session_id!r}, not on {self.name!r} in {session_id!r}"
                )
        return QtestbedJob(self, self._connection, submitted)

    def _session_id(self, session: QtestbedSession | None) -> str:
        if session is None:
            return ""
        if session.backend.name != self.name:
            raise ValueError(f"session is on device {session.backend.name!r}, not {self.name!r}")
        if session.session_id is None:
            raise ValueError("the session is not open: use it as a context manager or open() it")
        return session.session_id

    def _withdraw(self, submitted: Sequence[Submitted], cause: BaseException) -> None:
        """Best effort: cancel what a failed batch already queued."""
        for item in submitted:
            with suppress(QtestbedError):
                self._connection.client.cancel(
                    item.job.job_id, reason=f"rest of the batch was refused: {cause}"[:500]
                )


def _priority(value: str | None) -> jobs_pb2.JobPriority.ValueType:
    if value is None:
        return jobs_pb2.JOB_PRIORITY_UNSPECIFIED
    try:
        return PRIORITIES[value.lower()]
    except (KeyError, AttributeError):
        raise ValueError(
            f"priority must be one of {sorted(PRIORITIES)} or None, got {value!r}"
        ) from None
