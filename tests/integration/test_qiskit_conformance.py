"""Qiskit BackendV2 conformance against a real broker and a real driver: standard run options,
per-shot memory bound by the device's receipt, copies and pickles that reconnect, a target with
delay, reset and feed-forward, and Qiskit's own primitives (BackendSamplerV2,
BackendEstimatorV2) beside the project's Sampler and Estimator."""

from __future__ import annotations

import base64
import copy
import dataclasses
import json
import pickle
from collections import Counter
from collections.abc import Iterator
from typing import Any, TypeVar

import numpy as np
import pytest
from qiskit import ClassicalRegister, QuantumCircuit, QuantumRegister, qasm2, transpile
from qiskit.circuit import Parameter
from qiskit.primitives import BackendEstimatorV2, BackendSamplerV2, StatevectorEstimator
from qiskit.quantum_info import SparsePauliOp

from qtestbed.client import Client, Profile, QtestbedError
from qtestbed.qiskit import (
    Estimator,
    QtestbedBackend,
    QtestbedProvider,
    QtestbedSession,
    ReceiptVerificationError,
    Sampler,
    UnsupportedOptionError,
)
from qtestbed.receipt_bundle import ResultBundle, verify_bundle
from qtestbed.testing import LocalFacility
from qtestbed.v1 import jobs_pb2
from tests.integration.support import metric_value, scrape

T = TypeVar("T")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFacility]:
    with LocalFacility(tmp_path_factory.mktemp("conformance") / "facility") as facility:
        facility.start_broker()
        facility.start_driver("sim-open")
        facility.wait_available(facility.client("olivia"), "sim-open")
        yield facility


def profile(lab: LocalFacility, name: str) -> Profile:
    assert lab.addresses is not None
    loaded = Profile.load(lab.root / "users" / f"{name}.toml")
    return dataclasses.replace(loaded, broker=lab.addresses.grpc)


@pytest.fixture
def backend(lab: LocalFacility) -> Iterator[QtestbedBackend]:
    with QtestbedProvider(profile(lab, "alice")) as provider:
        yield provider.backend("sim-open")


def coin_and_bell(backend: QtestbedBackend) -> QuantumCircuit:
    """q0 a fair coin into register `coin`; q1, q2 a Bell pair into register `pair`."""
    coin, pair = ClassicalRegister(1, "coin"), ClassicalRegister(2, "pair")
    circuit = QuantumCircuit(QuantumRegister(3, "q"), coin, pair, name="coin_and_bell")
    circuit.h(0)
    circuit.h(1)
    circuit.cx(1, 2)
    circuit.measure(0, coin[0])
    circuit.measure([1, 2], pair)
    return transpile(circuit, backend, seed_transpiler=3)


# --- options -------------------------------------------------------------------------------


def test_unknown_and_unsupported_options_are_refused_by_name(backend: QtestbedBackend) -> None:
    circuit = coin_and_bell(backend)
    with pytest.raises(UnsupportedOptionError) as unknown:
        backend.run(circuit, shots=10, noise_model=object())
    assert "'noise_model'" in str(unknown.value)
    assert "meas_level" in str(unknown.value)
    refusals = {
        "meas_level": (1, "classified bits only"),
        "seed_simulator": (1234, "seed_simulator cannot be chosen"),
        "init_qubits": (False, "init_qubits must be True"),
        "rep_delay": (1e-4, "rep_delay cannot be chosen"),
        "meas_return": ("sometimes", "meas_return must be one of"),
        "shots": (0, "shots must be a positive integer"),
        "memory": ("yes", "memory must be True or False"),
    }
    for name, (value, words) in refusals.items():
        option: dict[str, Any] = {name: value}
        with pytest.raises(UnsupportedOptionError, match=words):
            backend.run(circuit, **option)
        with pytest.raises(UnsupportedOptionError, match=words):
            backend.set_options(**option)
    with pytest.raises(UnsupportedOptionError, match="'colour'"):
        backend.set_options(colour="blue")
    assert backend.options.meas_level == 2
    assert backend.options.seed_simulator is None
    # Qiskit's standard values are accepted, and set_options changes what run uses.
    backend.set_options(shots=37, memory=True)
    result = backend.run(circuit, meas_level=2, meas_return="single", seed_simulator=None).result(
        timeout=60
    )
    assert len(result.get_memory()) == 37
    assert sum(result.get_counts().values()) == 37


# --- per-shot memory -----------------------------------------------------------------------


def test_memory_is_one_bitstring_per_shot_in_shot_order_and_agrees_with_counts(
    backend: QtestbedBackend,
) -> None:
    circuit = coin_and_bell(backend)
    job = backend.run(circuit, shots=300, memory=True)
    result = job.result(timeout=60)
    memory = result.get_memory()
    assert len(memory) == 300
    assert all(shot.split(" ")[0] in {"00", "11"} and len(shot) == 4 for shot in memory)
    assert Counter(memory) == result.get_counts()  # the counts are the memory's histogram
    coins = [shot[-1] for shot in memory]
    # Shot order is the device's, not a histogram laid out again: a fair coin is not sorted.
    assert coins != sorted(coins)
    assert coins != sorted(coins, reverse=True)
    outcome = job.outcomes()[0]
    assert outcome.memory is not None
    assert len(outcome.memory) == 300
    assert outcome.result.memory_width == 3
    bundle = job.bundle()
    assert bundle.memory is not None
    assert bundle.memory.shots == 300
    # Without memory=True there is none, as Qiskit reports it.
    plain = backend.run(circuit, shots=20).result(timeout=60)
    with pytest.raises(Exception, match="memory"):
        plain.get_memory()


def test_altered_memory_fails_receipt_verification(
    lab: LocalFacility, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = Client(profile(lab, "alice"))
    try:
        backend = QtestbedProvider(client).backend("sim-open")
        job = backend.run(coin_and_bell(backend), shots=200, memory=True)
        job.wait_for_final_state(timeout=60)  # fetches nothing: the tampering comes first
        genuine = client.result
        first = genuine(job.broker_job_ids[0])
        width = first.memory_width
        assert width == 3

        def swapped(job_id: str) -> jobs_pb2.JobResult:
            """Two different shots exchanged: the counts still agree, the order does not."""
            result = genuine(job_id)
            shots = bytearray(result.memory)
            i = next(k for k in range(1, len(shots)) if shots[k] != shots[0])
            shots[0], shots[i] = shots[i], shots[0]
            result.memory = bytes(shots)
            return result

        def flipped(job_id: str) -> jobs_pb2.JobResult:
            result = genuine(job_id)
            shots = bytearray(result.memory)
            shots[5] ^= 0x01
            result.memory = bytes(shots)
            return result

        def stripped(job_id: str) -> jobs_pb2.JobResult:
            result = genuine(job_id)
            result.memory, result.memory_width = b"", 0
            return result

        expected = {
            swapped: ["memory digest"],
            flipped: ["memory digest", "histogram"],
            stripped: ["asked for and the result carries none", "carries none"],
        }
        for tamper, words in expected.items():
            monkeypatch.setattr(client, "result", tamper)
            with pytest.raises(ReceiptVerificationError) as refused:
                job.result(timeout=60)
            for word in words:
                assert any(word in p for p in refused.value.problems), (word, refused.value)
        monkeypatch.setattr(client, "result", genuine)
        assert len(job.result(timeout=60).get_memory()) == 200

        # Offline: one changed memory byte in a saved bundle fails `qtestbed receipt verify`.
        text = job.bundle().to_json()
        assert verify_bundle(ResultBundle.from_json(text), client.ca_pem).valid
        body = json.loads(text)
        packed = bytearray(base64.b64decode(body["memory"]["packed"]))
        packed[0] ^= 0x04
        body["memory"]["packed"] = base64.b64encode(bytes(packed)).decode()
        verdict = verify_bundle(ResultBundle.from_json(json.dumps(body)), client.ca_pem)
        assert not verdict.valid
        assert any("memory digest" in p for p in verdict.problems)
    finally:
        client.close()


# --- copies --------------------------------------------------------------------------------


def thawed(value: T) -> T:
    """A pickle round trip of our own object (never of untrusted bytes)."""
    loaded: T = pickle.loads(pickle.dumps(value))  # noqa: S301
    return loaded


def test_backend_job_and_primitives_survive_copy_deepcopy_and_pickle(
    backend: QtestbedBackend,
) -> None:
    circuit = coin_and_bell(backend)
    job = backend.run(circuit, shots=30, memory=True)
    sampler, estimator = Sampler(backend=backend), Estimator(backend=backend)
    for original in (backend, job, sampler, estimator):
        assert copy.copy(original) is not original
    assert copy.copy(backend).connection is backend.connection  # shallow: shared
    deep = copy.deepcopy(backend)
    assert deep.connection is not backend.connection
    assert deep.connection._client is None  # nothing opened until it is used
    assert deep.target.num_qubits == backend.target.num_qubits
    assert sum(deep.run(circuit, shots=25).result(timeout=60).get_counts().values()) == 25

    thawed_backend = thawed(backend)
    assert thawed_backend.name == "sim-open"
    assert thawed_backend.options.shots == 1024
    assert sum(thawed_backend.run(circuit, shots=15).result(timeout=60).get_counts().values()) == 15
    thawed_job = thawed(job)
    assert thawed_job.broker_job_ids == job.broker_job_ids
    assert len(thawed_job.result(timeout=60).get_memory()) == 30
    assert len(copy.deepcopy(job).result(timeout=60).get_memory()) == 30
    for primitive in (sampler, estimator):
        for clone in (thawed(primitive), copy.deepcopy(primitive)):
            assert clone.backend.name == "sim-open"
            assert clone.backend.connection is not backend.connection
    sampled = thawed(sampler).run([circuit], shots=20).result(timeout=60)
    assert sampled[0].data.pair.num_shots == 20


# --- target --------------------------------------------------------------------------------


def test_delay_reset_and_feed_forward_run_on_the_device(backend: QtestbedBackend) -> None:
    target = backend.target
    for name in ("delay", "reset", "measure", "if_else"):
        assert name in target.operation_names
    q, first, second = (
        QuantumRegister(2, "q"),
        ClassicalRegister(1, "m0"),
        ClassicalRegister(1, "m1"),
    )
    circuit = QuantumCircuit(q, first, second, name="feed_forward")
    circuit.x(1)
    circuit.delay(200, 1, unit="ns")
    circuit.reset(1)  # back to |0> whatever came before
    circuit.h(0)
    circuit.barrier()
    circuit.measure(0, first[0])  # mid-circuit measurement ...
    with circuit.if_test((first, 1)):  # ... and classical feed-forward on its outcome
        circuit.x(1)
    circuit.measure(1, second[0])
    isa = transpile(circuit, backend, seed_transpiler=5)
    result = backend.run(isa, shots=200, memory=True).result(timeout=60)
    memory = result.get_memory()
    assert {shot.replace(" ", "") for shot in memory} == {"00", "11"}  # q1 copies q0, each shot


# --- primitives ----------------------------------------------------------------------------


def bell_isa(backend: QtestbedBackend) -> QuantumCircuit:
    theta = Parameter("theta")
    circuit = QuantumCircuit(2, name="ry_bell")
    circuit.ry(theta, 0)
    circuit.cx(0, 1)
    return transpile(circuit, backend, seed_transpiler=11)


def observables_on(isa: QuantumCircuit) -> list[SparsePauliOp]:
    abstract = [
        SparsePauliOp(["ZZ"]),
        SparsePauliOp(["XX", "YY"], [0.5, -0.5]),
        SparsePauliOp(["ZI", "IX", "II"], [1.0, 0.5, 0.25]),
    ]
    return [obs.apply_layout(isa.layout) for obs in abstract]


def test_qiskits_backend_sampler_v2_runs_on_the_backend(backend: QtestbedBackend) -> None:
    circuit = coin_and_bell(backend)
    result = BackendSamplerV2(backend=backend).run([circuit], shots=200).result()
    pair = result[0].data.pair
    assert pair.num_shots == 200
    counts = pair.get_counts()
    assert set(counts) == {"00", "11"}  # not all zeros: the memory is the device's
    coins = result[0].data.coin.get_counts()
    assert set(coins) == {"0", "1"}


def test_qiskits_backend_estimator_v2_runs_on_the_backend(backend: QtestbedBackend) -> None:
    isa = bell_isa(backend)
    observables = observables_on(isa)
    values = [[0.3], [1.2]]
    pubs = [(isa, [[obs] for obs in observables], values)]
    found = BackendEstimatorV2(backend=backend, options={"default_precision": 0.05}).run(pubs)
    exact = StatevectorEstimator().run(pubs).result()[0].data.evs
    data = found.result()[0].data
    assert data.evs.shape == exact.shape == (3, 2)
    assert np.all(np.abs(data.evs - exact) <= 5 * data.stds + 1e-9)


def test_estimator_matches_the_statevector_estimator_within_its_errors(
    backend: QtestbedBackend,
) -> None:
    isa = bell_isa(backend)
    observables = observables_on(isa)
    values = np.array([[0.0], [0.7], [np.pi / 2], [2.5]])
    pubs = [(isa, [[obs] for obs in observables], values), (isa, observables[0], [0.7])]
    with QtestbedSession(backend, max_seconds=120) as session:
        job = Estimator(session=session).run(pubs, precision=0.05)
        result = job.result(timeout=120)
        assert {j.session_id for j in job.job.broker_jobs()} == {session.session_id}
    exact = StatevectorEstimator().run(pubs).result()
    for found, wanted in zip(result, exact, strict=True):
        assert found.data.evs.shape == wanted.data.evs.shape
        assert found.metadata["shots"] == 400  # ceil(1 / 0.05**2)
        assert np.all(found.data.stds >= 0)  # 0 where every shot agrees (ZZ on a Bell pair)
        assert np.all(np.abs(found.data.evs - wanted.data.evs) <= 5 * found.data.stds + 1e-9)
    # Identity terms are exact; the pub's evs for ZI + 0.5 IX + 0.25 II carry the 0.25.
    assert result[0].data.evs.shape == (3, 4)
    assert result.metadata["job_ids"] == job.job.broker_job_ids


def test_the_samplers_bitarrays_hold_the_devices_shots_in_order(backend: QtestbedBackend) -> None:
    circuit = coin_and_bell(backend)
    job = Sampler(backend=backend).run([circuit], shots=200)
    result = job.result(timeout=60)[0]
    assert result.metadata["shot_order"] is True
    coins = [bits[-1] for bits in result.data.coin.get_bitstrings()]
    assert coins != sorted(coins)
    assert coins != sorted(coins, reverse=True)
    outcome = job.job.outcomes()[0]
    assert outcome.memory is not None
    assert [str(v & 1) for v in outcome.memory] == coins  # clbit 0 is the coin, shot by shot
    assert set(result.data.pair.get_counts()) == {"00", "11"}


def test_the_estimator_refuses_a_result_whose_receipt_does_not_hold(
    lab: LocalFacility, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = Client(profile(lab, "alice"))
    try:
        backend = QtestbedProvider(client).backend("sim-open")
        isa = bell_isa(backend)
        job = Estimator(backend=backend).run([(isa, observables_on(isa)[0], [0.4])], precision=0.1)
        job.job.wait_for_final_state(timeout=60)
        genuine = client.result

        def inflated(job_id: str) -> jobs_pb2.JobResult:
            result = genuine(job_id)
            key = max(result.counts, key=lambda k: result.counts[k])
            result.counts[key] += 1
            return result

        monkeypatch.setattr(client, "result", inflated)
        with pytest.raises(ReceiptVerificationError, match="result digest"):
            job.result(timeout=60)
        monkeypatch.setattr(client, "result", genuine)
        assert job.result(timeout=60)[0].data.evs.shape == ()
    finally:
        client.close()


def test_the_broker_refuses_memory_beyond_its_bound_and_counts_why(lab: LocalFacility) -> None:
    """Checked at the broker too, not only by the provider: 100 000 shots x 50 bits is over."""
    client = lab.client("alice")
    wide = QuantumCircuit(1, 50)
    wide.measure(0, range(50))
    payload = qasm2.dumps(wide).encode()
    before = metric_value(scrape(lab), "qtestbed_submissions_rejected_total", field="memory")
    with pytest.raises(QtestbedError) as refused:
        client.submit(payload, device_id="sim-open", shots=100_000, memory=True)
    assert refused.value.code == "INVALID_ARGUMENT"
    assert "exceeds the limit of 4194304 bits" in refused.value.message
    after = metric_value(scrape(lab), "qtestbed_submissions_rejected_total", field="memory")
    assert after == before + 1
    assert client.submit(payload, device_id="sim-open", shots=1000, memory=True).job.memory
