"""Usage metrics from a real broker and driver: jobs and shots by outcome with bounded labels,
device busy time and utilization, driver heartbeats."""

from __future__ import annotations

from qtestbed.cli.demo import ghz_qasm2
from qtestbed.testing import LocalFacility, eventually
from tests.integration.support import metric_value, scrape, wait_state


def test_usage_metrics_count_outcomes_shots_busy_time_and_heartbeats(
    running: LocalFacility,
) -> None:
    alice = running.client("alice")
    done = [alice.submit(ghz_qasm2(3), device_id="sim-open", shots=250).job for _ in range(3)]
    for job in done:
        wait_state(alice, job.job_id, "COMPLETED")
    labels = {"device": "sim-open", "project": "open-science", "tier": "open"}
    text = scrape(running)
    assert metric_value(text, "qtestbed_job_outcomes_total", outcome="completed", **labels) == 3
    assert metric_value(text, "qtestbed_shots_total", outcome="completed", **labels) == 750
    assert metric_value(text, "qtestbed_device_busy_seconds_total", device="sim-open") > 0
    assert metric_value(text, "qtestbed_driver_heartbeats_total", device="sim-open") > 0
    eventually(
        lambda: (
            metric_value(scrape(running), "qtestbed_device_utilization_ratio", device="sim-open")
            > 0
        ),
        what="utilization to be refreshed on a tick",
    )
    # No job or nonce id ever becomes a label.
    for job in done:
        assert job.job_id not in text
