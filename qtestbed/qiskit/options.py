"""Run options of a qtestbed backend, by Qiskit's standard names, and what each may be.

Qiskit's own primitives (`BackendSamplerV2`, `BackendEstimatorV2`) and tools built on them pass
`shots`, `memory`, `seed_simulator`, `meas_level`, `meas_return`, `init_qubits` and `rep_delay`.
Each is accepted when the facility honours it and refused, with the reason, when it would
change what a researcher gets without the device doing it; nothing is silently ignored:

- `shots`: positive integer; `memory`: per-shot outcomes in shot order (bounded, see
  `attestation.shot_memory`), bound by the device's receipt.
- `meas_level`: 2 (classified bits) only; devices return no kerneled or raw data.
- `meas_return`: "single" or "avg"; as in Qiskit it shapes level-1 data only, so at level 2 it
  changes nothing.
- `init_qubits`: True only: every device starts each shot from |0>.
- `rep_delay`: None only: the device sets the time between shots.
- `seed_simulator`: None only. Devices draw their own randomness and receipts do not bind a
  seed, so a "seeded" result could not be told from an unseeded one, and a hardware device has
  no seed at all; asking for one is refused rather than ignored.
- `project`, `priority` ("low", "normal", "high" or None): this facility's own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from numbers import Integral

from qiskit.providers import Options

DEFAULT_SHOTS = 1024
PRIORITY_NAMES = ("low", "normal", "high")
MEAS_RETURNS = ("single", "avg")


def default_options() -> Options:
    return Options(
        shots=DEFAULT_SHOTS,
        memory=False,
        meas_level=2,
        meas_return="avg",
        init_qubits=True,
        rep_delay=None,
        seed_simulator=None,
        project="",
        priority=None,
    )


ACCEPTED = tuple(default_options().__dict__)


class UnsupportedOptionError(ValueError):
    """A run option this backend does not have, or a value it cannot honour."""


@dataclass(frozen=True, kw_only=True, slots=True)
class RunOptions:
    """What one run submits with, after every check."""

    shots: int
    memory: bool
    project: str
    priority: str | None


def check_option_names(given: Mapping[str, object]) -> None:
    unknown = sorted(set(given) - set(ACCEPTED))
    if unknown:
        raise UnsupportedOptionError(
            f"unknown run option {unknown[0]!r} for a qtestbed backend; the options are "
            f"{', '.join(ACCEPTED)}"
        )


def resolve(defaults: Options, overrides: Mapping[str, object]) -> RunOptions:
    """The backend's options with `overrides` applied, every value checked. An override of
    None means "the backend's setting", as Qiskit callers pass it (`shots=None`)."""
    values = {**defaults.__dict__, **{k: v for k, v in overrides.items() if v is not None}}
    _check_fixed(values)
    shots = values["shots"]
    if isinstance(shots, bool) or not isinstance(shots, Integral) or shots < 1:
        raise UnsupportedOptionError(f"shots must be a positive integer, got {shots!r}")
    memory = values["memory"]
    if not isinstance(memory, bool):
        raise UnsupportedOptionError(f"memory must be True or False, got {memory!r}")
    project = values["project"]
    if not isinstance(project, str):
        raise UnsupportedOptionError(f"project must be a string, got {project!r}")
    priority = values["priority"]
    if priority is not None and (
        not isinstance(priority, str) or priority.lower() not in PRIORITY_NAMES
    ):
        raise UnsupportedOptionError(
            f"priority must be one of {list(PRIORITY_NAMES)} or None, got {priority!r}"
        )
    return RunOptions(shots=int(shots), memory=memory, project=project, priority=priority)


def _check_fixed(values: Mapping[str, object]) -> None:
    """The options whose only honest value is the one the devices have."""
    level = values["meas_level"]
    if isinstance(level, bool) or level != 2:
        raise UnsupportedOptionError(
            f"meas_level {level!r} is not supported: devices return classified bits only "
            "(meas_level=2); kerneled (1) and raw (0) data are not available"
        )
    meas_return = values["meas_return"]
    if str(getattr(meas_return, "value", meas_return)) not in MEAS_RETURNS:
        raise UnsupportedOptionError(
            f"meas_return must be one of {list(MEAS_RETURNS)}, got {meas_return!r}"
        )
    if values["init_qubits"] is not True:
        raise UnsupportedOptionError(
            "init_qubits must be True: every device starts each shot from |0>, "
            f"got {values['init_qubits']!r}"
        )
    if values["rep_delay"] is not None:
        raise UnsupportedOptionError(
            "rep_delay cannot be chosen: the device sets the time between shots; leave it None, "
            f"got {values['rep_delay']!r}"
        )
    if values["seed_simulator"] is not None:
        raise UnsupportedOptionError(
            "seed_simulator cannot be chosen: devices draw their own randomness and the receipt "
            "binds no seed, so a seeded result could not be told from an unseeded one; leave it "
            f"None, got {values['seed_simulator']!r}"
        )
