"""Calibration windows and per-connection export classes (issue 12, point 3).

A calibration figure outside its reference window fails appraisal with its own reason code,
counted, audited and quarantining like any other authenticated failure; a claimed two-qubit
error lowers a class only when a window bounds it; each connection is classified from its own
evidence, the device as a whole takes the strictest, and a job goes only to a connection whose
class its owner may use.
"""

from __future__ import annotations

from attestation.calibration import CalibrationWindows, Tolerance
from broker.devices.model import DeviceStatus
from broker.jobs.model import JobState
from broker.link import messages as m
from tests.unit.core.harness import (
    Core,
    connection,
    events,
    job_of,
    metric,
    queued,
)

# The 34-99 qubit band of the shipped 4A906.a table is controlled at a C-NOT error <= 1e-4.
BAND_QUBITS = 50
WINDOWS = CalibrationWindows(
    two_qubit_error=Tolerance(minimum=1e-5, maximum=1e-3),
    readout_error=Tolerance(maximum=0.05),
    t1_us=Tolerance(minimum=50),
)
GOOD = {"readout_error": 0.02, "t1_us": 80.0}


async def _register(core: Core, windows: CalibrationWindows = WINDOWS) -> None:
    await core.register(num_qubits=BAND_QUBITS, calibration=windows)


def _calibration_reasons(verdict: m.Verdict) -> list[str]:
    return [r for r in verdict.reasons if r.startswith("CALIBRATION_OUT_OF_RANGE")]


async def test_a_two_qubit_error_outside_its_window_is_refused_counted_audited_quarantined(
    core: Core,
) -> None:
    await _register(core)
    driver = core.driver()
    verdict = await driver.attest(error=0.5, **GOOD)  # the right digest, an absurd error
    assert not verdict.affirming
    assert _calibration_reasons(verdict) == [
        "CALIBRATION_OUT_OF_RANGE: two_qubit_error: claimed 0.5, outside the reference "
        "window [1e-05, 0.001]"
    ]
    labels = {
        "device": "dev-open",
        "outcome": "contraindicated",
        "reason": "CALIBRATION_OUT_OF_RANGE",
    }
    assert metric(core, "qtestbed_attestation_verifications_total", **labels) == 1
    [failed] = events(core, "attestation.failed")
    assert failed.subject == "dev-open"
    assert any("two_qubit_error: claimed 0.5" in r for r in failed.detail["reasons"])
    # Signed by the device itself, answering its challenge: held against the device.
    record = core.parts.registries.devices.get("dev-open")
    assert record is not None
    assert record.status is DeviceStatus.QUARANTINED
    assert "CALIBRATION_OUT_OF_RANGE" in record.status_reason
    assert metric(core, "qtestbed_device_quarantines_total", device="dev-open") == 1
    # The claim never classified anything: the device keeps its declared (controlled) class.
    assert connection(driver).export_class is None
    assert core.parts.registries.exports.of("dev-open").export_class == "4A906.a"
    assert events(core, "device.export_class") == []


async def test_each_windowed_figure_is_checked_and_a_missing_one_is_refused(core: Core) -> None:
    await _register(core)
    verdict = await core.driver().attest(error=5e-5, readout_error=0.2, t1_us=10.0)
    assert sorted(_calibration_reasons(verdict)) == [
        "CALIBRATION_OUT_OF_RANGE: readout_error: claimed 0.2, outside the reference window "
        "[-inf, 0.05]",
        "CALIBRATION_OUT_OF_RANGE: t1_us: claimed 10, outside the reference window [50, +inf]",
    ]
    # Leaving a figure out does not skip its window.
    other = core.driver()
    verdict = await other.attest(error=5e-5, t1_us=80.0)
    assert _calibration_reasons(verdict) == [
        "CALIBRATION_OUT_OF_RANGE: readout_error: not claimed, the reference window is [-inf, 0.05]"
    ]


async def test_figures_inside_their_windows_affirm(core: Core) -> None:
    await _register(core)
    driver = core.driver()
    assert (await driver.attest(error=5e-5, **GOOD)).affirming
    attested = connection(driver).export_class
    assert attested is not None
    assert (attested.classification.export_class, attested.two_qubit_error) == ("4A906.a", 5e-5)


async def test_an_unbounded_two_qubit_claim_cannot_lower_the_class(core: Core) -> None:
    await _register(core, CalibrationWindows())  # the operator bounded nothing
    driver = core.driver()
    assert (await driver.attest(error=0.5)).affirming  # physical, and nothing bounds it
    attested = connection(driver).export_class
    assert attested is not None
    assert attested.classification.export_class == "4A906.a"  # as if the error were unknown
    assert "is not used: the reference values set no window for it" in (
        attested.classification.reason
    )
    assert core.parts.registries.exports.of("dev-open").export_class == "4A906.a"


async def test_each_connection_has_its_own_class_and_the_device_takes_the_strictest(
    core: Core,
) -> None:
    await _register(core)
    exports = core.parts.registries.exports
    worse = core.driver()
    assert (await worse.attest(error=2e-4, **GOOD)).affirming  # above 1e-4: EAR99
    assert exports.of("dev-open").export_class == "EAR99"
    better = core.driver()
    assert (await better.attest(error=5e-5, **GOOD)).affirming  # at or below 1e-4: controlled
    classes = [connection(d).export_class for d in (worse, better)]
    assert [c.classification.export_class for c in classes if c] == ["EAR99", "4A906.a"]
    assert exports.of("dev-open").export_class == "4A906.a"
    assert exports.attested_two_qubit_error("dev-open") == 2e-4  # the worst one attested
    # A later appraisal of the lenient connection changes nothing: the strictest holds.
    worse.heard()
    await core.parts.link.attestor.challenge(connection(worse))
    assert (await worse.attest(error=2e-4, **GOOD)).affirming
    assert exports.of("dev-open").export_class == "4A906.a"
    crossings = [(e.detail["from"], e.detail["to"]) for e in events(core, "device.export_class")]
    assert crossings == [(None, "EAR99"), ("EAR99", "4A906.a")]
    # The controlled connection leaves: the next appraisal or tick sees the device's class move.
    await better.say(m.Goodbye(reason="done"))
    await core.parts.link.attestor.maintain(core.clock.now())
    assert exports.of("dev-open").export_class == "EAR99"
    crossings = [(e.detail["from"], e.detail["to"]) for e in events(core, "device.export_class")]
    assert crossings[-1] == ("4A906.a", "EAR99")


async def test_a_job_goes_only_to_a_connection_whose_class_its_owner_may_use(core: Core) -> None:
    """alice has no export licence or jurisdiction: she may use the device only as EAR99."""
    await _register(core)
    lenient = core.driver()
    assert (await lenient.attest(error=2e-4, **GOOD)).affirming
    jobs = {await queued(core), await queued(core)}  # accepted: the device is EAR99
    await core.pump()
    [grant] = lenient.grants()
    [second] = jobs - {grant.job_id}
    strict = core.driver()  # the same device, classified controlled by its own evidence
    assert (await strict.attest(error=5e-5, **GOOD)).affirming
    await core.pump()
    assert strict.grants() == []  # idle, attested, and refused by the gate for alice
    assert (await job_of(core, second)).state is JobState.QUEUED  # waits for `lenient`
    await lenient.finish(grant)
    await core.pump()
    assert [g.job_id for g in lenient.grants()] == [second]
    assert strict.grants() == []
    [dispatched] = [e for e in events(core, "job.dispatched") if e.subject == second]
    lenient_conn = connection(lenient)
    assert lenient_conn.attestation is not None
    assert dispatched.detail["evidence_digest"] == lenient_conn.attestation.evidence_digest


async def test_a_job_no_attested_connection_may_take_is_denied_at_dispatch(core: Core) -> None:
    await _register(core)
    lenient = core.driver()
    assert (await lenient.attest(error=2e-4, **GOOD)).affirming
    busy = await queued(core)
    await core.pump()
    [grant] = lenient.grants()
    waiting = await queued(core)
    strict = core.driver()
    assert (await strict.attest(error=5e-5, **GOOD)).affirming
    await lenient.say(m.Goodbye(reason="lenient connection leaves"))  # `busy` is requeued
    await core.pump()
    assert grant.job_id == busy
    for job_id in (busy, waiting):
        job = await job_of(core, job_id)
        assert (job.state, job.rule_id) == (JobState.DENIED, "export-jurisdiction")
        [denied] = [e for e in events(core, "clearance.denied") if e.subject == job_id]
        assert denied.detail["stage"] == "dispatch"
    assert strict.grants() == []
    labels = {"rule": "export-jurisdiction", "stage": "dispatch"}
    assert metric(core, "qtestbed_clearance_denials_total", **labels) == 2
