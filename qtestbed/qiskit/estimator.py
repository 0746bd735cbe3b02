"""`Estimator`: Qiskit's `BaseEstimatorV2` over a qtestbed backend (and, optionally, a session).

For each pub, every parameter set is bound on the client and its observables' Pauli terms are
split into qubit-wise commuting groups; each group is one circuit measured in that group's
basis. All circuits of all pubs go to the broker as one batch, and every receipt is verified
before any value is computed (as for the Sampler). A pub's shots are `ceil(1 / precision**2)`.

`evs` are the estimates; `stds` bound their standard error by `sum |c_i| sigma_i / sqrt(shots)`
over the terms (as Qiskit's `BackendEstimatorV2` does): terms measured on the same shots are
correlated, and the sum of their standard deviations bounds the deviation of their sum.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
from qiskit import ClassicalRegister, QuantumCircuit
from qiskit.primitives import BaseEstimatorV2, DataBin, PrimitiveResult, PubResult
from qiskit.primitives.containers.estimator_pub import EstimatorPub, EstimatorPubLike
from qiskit.quantum_info import Pauli, PauliList

from qtestbed.qiskit.backend import QtestbedBackend
from qtestbed.qiskit.job import Outcome, QtestbedJob
from qtestbed.qiskit.primitive_job import BatchPrimitiveJob
from qtestbed.qiskit.session import QtestbedSession

DEFAULT_PRECISION = 0.015625  # Qiskit's BackendEstimatorV2 default: 4096 shots

ParamIndex = tuple[int, ...]


@dataclass(frozen=True, kw_only=True, slots=True)
class _Group:
    """One measured circuit: which parameter set, which Pauli terms, which qubits read out
    (clbit `offset + k` holds qubit `qubits[k]`)."""

    param_index: ParamIndex
    paulis: tuple[str, ...]
    qubits: tuple[int, ...]
    offset: int


@dataclass(frozen=True, kw_only=True, slots=True)
class _PubPlan:
    start: int
    groups: tuple[_Group, ...]
    param_indices: np.ndarray  # parameter-set index per result element (object array)
    observables: np.ndarray  # {pauli label: coefficient} per result element (object array)
    shots: int
    precision: float
    circuit_metadata: Mapping[str, object]


class Estimator(BaseEstimatorV2):  # type: ignore[misc]
    def __init__(
        self,
        *,
        backend: QtestbedBackend | None = None,
        session: QtestbedSession | None = None,
        default_precision: float = DEFAULT_PRECISION,
        project: str | None = None,
        priority: str | None = None,
    ) -> None:
        """Run on `backend`, or on the session's backend inside `session`. Circuits should be
        ISA circuits for the backend, without measurements; observables act on its qubits."""
        if backend is None:
            if session is None:
                raise ValueError("give a backend or a session")
            backend = session.backend
        elif session is not None and session.backend.name != backend.name:
            raise ValueError(f"session is on {session.backend.name!r}, not {backend.name!r}")
        _check_precision(default_precision)
        self._backend = backend
        self._session = session
        self._default_precision = default_precision
        self._project = project
        self._priority = priority

    @property
    def backend(self) -> QtestbedBackend:
        return self._backend

    @property
    def session(self) -> QtestbedSession | None:
        return self._session

    def run(
        self, pubs: Iterable[EstimatorPubLike], *, precision: float | None = None
    ) -> EstimatorJob:
        chosen = self._default_precision if precision is None else precision
        _check_precision(chosen)
        coerced = [EstimatorPub.coerce(pub, chosen) for pub in pubs]
        plans: list[_PubPlan] = []
        items: list[tuple[QuantumCircuit, int]] = []
        basis_gates = frozenset(self._backend.target.operation_names)
        for pub in coerced:
            _check_precision(pub.precision)
            shots = math.ceil(1 / pub.precision**2)
            plan, circuits = _plan(pub, len(items), shots, basis_gates)
            plans.append(plan)
            items += [(circuit, shots) for circuit in circuits]
        if not items:
            raise ValueError(
                "nothing to measure: every observable is a multiple of the identity, whose "
                "expectation value is its coefficient"
            )
        job = self._backend.run_batch(
            items, project=self._project, priority=self._priority, session=self._session
        )
        return EstimatorJob(job, plans)


class EstimatorJob(BatchPrimitiveJob):
    """The batch one `Estimator.run` submitted."""

    def __init__(self, job: QtestbedJob, plans: Sequence[_PubPlan]) -> None:
        super().__init__(job)
        self._plans = tuple(plans)

    def result(self, timeout: float | None = None) -> PrimitiveResult:
        """Verified results; raises like `QtestbedJob.result` (refused receipts included)."""
        outcomes = self.job.outcomes(timeout)
        return PrimitiveResult(
            [_pub_result(plan, outcomes) for plan in self._plans],
            metadata={"version": 2, "job_ids": self.job.broker_job_ids},
        )


def _terms(observables: np.ndarray, index: tuple[int, ...]) -> Mapping[str, complex]:
    """One observable of a broadcast ObservablesArray: {Pauli label: coefficient}."""
    return cast(Mapping[str, complex], observables[index])


def _param(param_indices: np.ndarray, index: tuple[int, ...]) -> ParamIndex:
    return cast(ParamIndex, param_indices[index])


def _check_precision(precision: float) -> None:
    if isinstance(precision, bool) or not (isinstance(precision, int | float) and precision > 0):
        raise ValueError(f"precision must be a positive number, got {precision!r}")


def _plan(
    pub: EstimatorPub, start: int, shots: int, basis_gates: frozenset[str]
) -> tuple[_PubPlan, list[QuantumCircuit]]:
    values = pub.parameter_values
    shape = values.shape
    indices = np.fromiter(np.ndindex(shape), dtype=object).reshape(shape)
    param_indices, observables = np.broadcast_arrays(indices, pub.observables)
    wanted: dict[ParamIndex, set[str]] = defaultdict(set)
    for index in np.ndindex(*param_indices.shape):
        terms = _terms(observables, index)
        wanted[_param(param_indices, index)].update(t for t in terms if set(t) != {"I"})
    groups: list[_Group] = []
    circuits: list[QuantumCircuit] = []
    for param_index, labels in wanted.items():
        if not labels:
            continue
        bound = values.bind(pub.circuit, param_index)
        for group in PauliList(sorted(labels)).group_commuting(qubit_wise=True):
            basis = Pauli((np.logical_or.reduce(group.z), np.logical_or.reduce(group.x)))
            circuit, qubits = _measured(bound, basis, basis_gates)
            groups.append(
                _Group(
                    param_index=param_index,
                    paulis=tuple(p.to_label() for p in group),
                    qubits=qubits,
                    offset=bound.num_clbits,
                )
            )
            circuits.append(circuit)
    plan = _PubPlan(
        start=start,
        groups=tuple(groups),
        param_indices=param_indices,
        observables=observables,
        shots=shots,
        precision=float(pub.precision),
        circuit_metadata=dict(pub.circuit.metadata or {}),
    )
    return plan, circuits


def _measured(
    circuit: QuantumCircuit, basis: Pauli, basis_gates: frozenset[str]
) -> tuple[QuantumCircuit, tuple[int, ...]]:
    """`circuit` with each qubit of `basis` rotated into its Pauli's eigenbasis and measured
    into a new register. Rotations use the device's rz and sx when it has them (so the circuit
    stays ISA), else h and sdg."""
    qubits = tuple(q for q in range(basis.num_qubits) if basis.x[q] or basis.z[q])
    out = circuit.copy()
    register = ClassicalRegister(len(qubits), name=_fresh_name(circuit, "meas_basis"))
    out.add_register(register)
    native = {"rz", "sx"} <= basis_gates
    for k, q in enumerate(qubits):
        label = basis[q].to_label()
        if label == "X":
            if native:
                out.rz(math.pi / 2, q)
                out.sx(q)
            else:
                out.h(q)
        elif label == "Y":
            if native:
                out.sx(q)
            else:
                out.sdg(q)
                out.h(q)
        out.measure(q, register[k])
    return out, qubits


def _fresh_name(circuit: QuantumCircuit, stem: str) -> str:
    taken = {register.name for register in circuit.cregs}
    name, n = stem, 0
    while name in taken:
        n += 1
        name = f"{stem}{n}"
    return name


def _expectations(group: _Group, outcome: Outcome) -> dict[str, tuple[float, float]]:
    """Each Pauli term's estimate and single-shot variance from one group's counts."""
    total = sum(outcome.counts.values())
    found = {}
    for label in group.paulis:
        # Pauli labels put qubit 0 rightmost; term qubit q was read into clbit offset + k.
        mask = 0
        for k, q in enumerate(group.qubits):
            if label[-1 - q] != "I":
                mask |= 1 << (group.offset + k)
        signed = sum(
            count * (-1 if (value & mask).bit_count() % 2 else 1)
            for value, count in outcome.counts.items()
        )
        mean = signed / total
        found[label] = (mean, max(0.0, 1.0 - mean * mean))
    return found


def _pub_result(plan: _PubPlan, outcomes: Sequence[Outcome]) -> PubResult:
    estimates: dict[tuple[ParamIndex, str], tuple[float, float]] = {}
    for offset, group in enumerate(plan.groups):
        for label, value in _expectations(group, outcomes[plan.start + offset]).items():
            estimates[group.param_index, label] = value
    evs = np.zeros(plan.param_indices.shape, dtype=float)
    stds = np.zeros(plan.param_indices.shape, dtype=float)
    for index in np.ndindex(*plan.param_indices.shape):
        param_index = _param(plan.param_indices, index)
        for label, coeff in _terms(plan.observables, index).items():
            if set(label) == {"I"}:
                evs[index] += float(np.real(coeff))
                continue
            mean, variance = estimates[param_index, label]
            evs[index] += float(np.real(coeff)) * mean
            stds[index] += abs(coeff) * math.sqrt(variance)
    stds /= math.sqrt(plan.shots)
    job_ids = [outcomes[plan.start + i].job.job_id for i in range(len(plan.groups))]
    return PubResult(
        DataBin(evs=evs, stds=stds, shape=evs.shape),
        metadata={
            "target_precision": plan.precision,
            "shots": plan.shots,
            "circuit_metadata": dict(plan.circuit_metadata),
            "job_ids": job_ids,
        },
    )
