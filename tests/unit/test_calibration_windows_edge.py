"""Calibration windows at the edges: the admin codec, `qtestbed reference set` flags and the
facility file `qtestbed init` writes."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from attestation.calibration import CalibrationWindows, Tolerance
from broker.access.facility import FacilityError, load_facility
from broker.devices.model import ReferenceScope, ReferenceValuesRecord
from broker.errors import BrokerError, ErrorCode
from broker.grpc.codec.admin import reference_from_proto, reference_to_proto
from qtestbed.cli.operator import calibration_window
from qtestbed.facility_init import init_facility
from qtestbed.v1 import admin_pb2


def _values(**windows: admin_pb2.CalibrationWindow) -> admin_pb2.ReferenceValues:
    values = admin_pb2.ReferenceValues(
        scope=admin_pb2.REFERENCE_SCOPE_DEVICE,
        scope_id="sim-open",
        firmware=["fw"],
        control_software=["ctl"],
        driver_build=["drv"],
        calibration_digest=["c" * 64],
        num_qubits=5,
    )
    for figure, window in windows.items():
        getattr(values, figure).CopyFrom(window)
    return values


def test_windows_cross_the_admin_api_both_ways() -> None:
    values = _values(
        two_qubit_error=calibration_window("1e-5:1e-3"),
        readout_error=calibration_window(":0.05"),
        t1_us=calibration_window("50:"),
    )
    got = reference_from_proto(values)
    assert got.calibration == CalibrationWindows(
        two_qubit_error=Tolerance(minimum=1e-5, maximum=1e-3),
        readout_error=Tolerance(maximum=0.05),
        t1_us=Tolerance(minimum=50),
    )
    record = ReferenceValuesRecord(
        scope=ReferenceScope.DEVICE,
        scope_id="sim-open",
        version=1,
        firmware=got.firmware,
        control_software=got.control_software,
        driver_build=got.driver_build,
        calibration_digest=got.calibration_digest,
        num_qubits=5,
        not_before=None,
        not_after=None,
        created_at=0.0,
        created_by="olivia",
        calibration=got.calibration,
    )
    back = reference_to_proto(record)
    assert not back.HasField("t2_us")
    assert not back.readout_error.HasField("min")
    assert reference_from_proto(back).calibration == got.calibration


def test_no_windows_means_none_set() -> None:
    assert reference_from_proto(_values()).calibration == CalibrationWindows()


@pytest.mark.parametrize(
    ("window", "field", "message"),
    [
        (admin_pb2.CalibrationWindow(), "t1_us", "t1_us window: a calibration window needs"),
        (admin_pb2.CalibrationWindow(min=0.3, max=0.1), "readout_error", "above its maximum"),
        (admin_pb2.CalibrationWindow(max=1.5), "two_qubit_error", "is a probability"),
    ],
)
def test_a_bad_window_is_invalid_argument_naming_the_figure(
    window: admin_pb2.CalibrationWindow, field: str, message: str
) -> None:
    with pytest.raises(BrokerError, match=message) as caught:
        reference_from_proto(_values(**{field: window}))
    assert caught.value.code is ErrorCode.INVALID_ARGUMENT


@pytest.mark.parametrize("text", ["0.1", ":", "", "a:b", "1e-3:x"])
def test_the_cli_refuses_a_window_it_cannot_read(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=r"MIN:MAX|must be numbers"):
        calibration_window(text)


def test_init_writes_windows_around_the_simulators_figures_and_the_broker_reads_them(
    tmp_path: Path,
) -> None:
    init_facility(tmp_path / "fac")
    path = tmp_path / "fac" / "facility.toml"
    seeds = {d.reference.scope_id: d.reference for d in load_facility(path).seed_devices}
    assert seeds["sim-open"].calibration == CalibrationWindows()  # an ideal simulator
    assert seeds["sim-restricted"].calibration == CalibrationWindows(
        two_qubit_error=Tolerance(minimum=0.005, maximum=0.02),
        readout_error=Tolerance(minimum=0.005, maximum=0.02),
        t1_us=Tolerance(minimum=50.0, maximum=200.0),
        t2_us=Tolerance(minimum=40.0, maximum=160.0),
    )
    text = path.read_text().replace("two_qubit_error = [0.005, 0.02]", "t3_us = [1.0, 2.0]")
    path.write_text(text)
    with pytest.raises(FacilityError, match=r"sim-restricted.*unknown calibration figure 't3_us'"):
        load_facility(path)
