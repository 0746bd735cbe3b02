"""`Sampler`: Qiskit's `BaseSamplerV2` over a qtestbed backend (and, optionally, a session).

Parameters are bound on the client, one circuit per parameter set, and every bound circuit of
every pub is submitted in one batch when `run` is called. Each pub's result holds one `BitArray`
per classical register, shaped like the pub's parameter values, holding the device's per-shot
memory in shot order (bound by the verified receipt). A batch too large for per-shot memory
(shots x classical bits over `MAX_MEMORY_BITS` for some pub) is rebuilt from the verified counts
instead, and its metadata says `"shot_order": False`: the order of shots then means nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from qiskit import QuantumCircuit
from qiskit.primitives import (
    BaseSamplerV2,
    BitArray,
    DataBin,
    PrimitiveResult,
    SamplerPubResult,
)
from qiskit.primitives.containers.sampler_pub import SamplerPub, SamplerPubLike

from attestation.shot_memory import MAX_MEMORY_BITS
from qtestbed.qiskit.backend import QtestbedBackend
from qtestbed.qiskit.job import Outcome, QtestbedJob
from qtestbed.qiskit.layout import ClassicalLayout
from qtestbed.qiskit.options import DEFAULT_SHOTS
from qtestbed.qiskit.primitive_job import BatchPrimitiveJob
from qtestbed.qiskit.session import QtestbedSession


@dataclass(frozen=True, kw_only=True, slots=True)
class _PubPlan:
    """Where a pub's bound circuits sit in the batch, and how to shape their results."""

    start: int
    shape: tuple[int, ...]
    shots: int
    layout: ClassicalLayout
    circuit_metadata: dict[str, object] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


class Sampler(BaseSamplerV2):  # type: ignore[misc]
    def __init__(
        self,
        *,
        backend: QtestbedBackend | None = None,
        session: QtestbedSession | None = None,
        default_shots: int = DEFAULT_SHOTS,
        project: str | None = None,
        priority: str | None = None,
    ) -> None:
        """Run on `backend`, or on the session's backend inside `session`. Receipts are always
        verified; circuits should already be transpiled for the backend (ISA circuits)."""
        if backend is None:
            if session is None:
                raise ValueError("give a backend or a session")
            backend = session.backend
        elif session is not None and session.backend.name != backend.name:
            raise ValueError(f"session is on {session.backend.name!r}, not {backend.name!r}")
        if isinstance(default_shots, bool) or default_shots < 1:
            raise ValueError(f"default_shots must be a positive integer, got {default_shots!r}")
        self._backend = backend
        self._session = session
        self._default_shots = default_shots
        self._project = project
        self._priority = priority

    @property
    def backend(self) -> QtestbedBackend:
        return self._backend

    @property
    def session(self) -> QtestbedSession | None:
        return self._session

    def run(self, pubs: Iterable[SamplerPubLike], *, shots: int | None = None) -> SamplerJob:
        coerced = [
            SamplerPub.coerce(pub, self._default_shots if shots is None else shots) for pub in pubs
        ]
        plans: list[_PubPlan] = []
        items: list[tuple[QuantumCircuit, int]] = []
        # One batch, one memory setting: memory whenever every pub fits the bound.
        memory = all(pub.shots * pub.circuit.num_clbits <= MAX_MEMORY_BITS for pub in coerced)
        for pub in coerced:
            bound = pub.parameter_values.bind_all(pub.circuit)
            plans.append(
                _PubPlan(
                    start=len(items),
                    shape=tuple(pub.shape),
                    shots=int(pub.shots),
                    layout=ClassicalLayout.of(pub.circuit),
                    circuit_metadata=dict(pub.circuit.metadata or {}),
                )
            )
            items += [(circuit, int(pub.shots)) for circuit in bound.ravel().tolist()]
        job = self._backend.run_batch(
            items,
            project=self._project,
            priority=self._priority,
            session=self._session,
            memory=memory,
        )
        return SamplerJob(job, plans)


class SamplerJob(BatchPrimitiveJob):
    """The batch one `Sampler.run` submitted; `result()` waits on the broker's pushed updates."""

    def __init__(self, job: QtestbedJob, plans: Sequence[_PubPlan]) -> None:
        super().__init__(job)
        self._plans = tuple(plans)

    def result(self, timeout: float | None = None) -> PrimitiveResult:
        """Verified results; raises like `QtestbedJob.result` (refused receipts included)."""
        outcomes = self.job.outcomes(timeout)
        return PrimitiveResult(
            [
                _pub_result(plan, outcomes[plan.start : plan.start + plan.size])
                for plan in self._plans
            ],
            metadata={"version": 2, "job_ids": self.job.broker_job_ids},
        )


def _pub_result(plan: _PubPlan, outcomes: Sequence[Outcome]) -> SamplerPubResult:
    num_bits = plan.layout.num_clbits
    data = np.zeros((plan.size, plan.shots, (num_bits + 7) // 8), dtype=np.uint8)
    in_order = all(outcome.memory is not None for outcome in outcomes)
    for index, outcome in enumerate(outcomes):  # shots match: the receipt check counted them
        if outcome.memory is not None:
            data[index] = BitArray.from_samples(outcome.memory, num_bits).array
        else:
            data[index] = BitArray.from_counts(outcome.counts, num_bits).array
    whole = BitArray(data.reshape(*plan.shape, *data.shape[1:]), num_bits)
    registers = {name: whole.slice_bits(list(indices)) for name, indices in plan.layout.registers}
    return SamplerPubResult(
        DataBin(**registers, shape=plan.shape),
        metadata={
            "shots": plan.shots,
            "shot_order": in_order,
            "circuit_metadata": plan.circuit_metadata,
            "job_ids": [outcome.job.job_id for outcome in outcomes],
        },
    )
