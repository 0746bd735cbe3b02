"""Qiskit access to a qtestbed broker, the way IBM Quantum or Braket are reached.

    provider = QtestbedProvider(Path("users/alice.toml"))
    backend = provider.backend("sim-open")
    job = backend.run(transpile(circuit, backend), shots=1000)
    counts = job.result().get_counts()      # only after the device-signed receipt verifies

`Sampler` implements `BaseSamplerV2` and `Estimator` `BaseEstimatorV2`; `QtestbedSession` holds a
device for iterative work. Backends, jobs and primitives survive `copy.deepcopy` and `pickle`
(a copy reconnects from the same profile when first used).
"""

from qtestbed.qiskit.backend import QtestbedBackend
from qtestbed.qiskit.estimator import Estimator, EstimatorJob
from qtestbed.qiskit.job import JobFailedError, Outcome, QtestbedJob
from qtestbed.qiskit.options import UnsupportedOptionError
from qtestbed.qiskit.provider import QtestbedProvider
from qtestbed.qiskit.receipts import Attestation, ReceiptVerificationError
from qtestbed.qiskit.sampler import Sampler, SamplerJob
from qtestbed.qiskit.session import QtestbedSession

__all__ = [
    "Attestation",
    "Estimator",
    "EstimatorJob",
    "JobFailedError",
    "Outcome",
    "QtestbedBackend",
    "QtestbedJob",
    "QtestbedProvider",
    "QtestbedSession",
    "ReceiptVerificationError",
    "Sampler",
    "SamplerJob",
    "UnsupportedOptionError",
]
