"""Monitoring as shipped: the Prometheus config, alert rules and their unit tests pass promtool,
the Grafana dashboards and alerts use only metrics the broker exports, docs/metrics.md documents
every metric, and a live scrape of a real broker passes `promtool check metrics`."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics import MetricWrapperBase

from broker.metrics import BrokerMetrics
from qtestbed.cli.demo import ghz_qasm2
from qtestbed.testing import LocalFacility
from qtestbed.witness_metrics import WitnessMetrics
from tests.integration.support import scrape, wait_state

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS = REPO / "deploy" / "prometheus"
CONFIG = PROMETHEUS / "prometheus.yml"
RULES = PROMETHEUS / "rules" / "qtestbed-alerts.yml"
RULE_TESTS = PROMETHEUS / "tests" / "qtestbed-alerts.test.yml"
DASHBOARDS = [REPO / "deploy" / "grafana" / f"qtestbed-{n}.json" for n in ("operators", "security")]
DOCS = REPO / "docs" / "metrics.md"
INSTALL = "deploy/prometheus/install-promtool.sh .venv/bin"

METRIC_NAME = re.compile(r"\bqtestbed_[a-zA-Z0-9_]+")
# Grafana's own variables, replaced by values promtool can parse.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__range": "1h", "$__interval": "1m"}


def find_promtool() -> str | None:
    beside = Path(sys.executable).parent / "promtool"  # .venv/bin, where the set-up puts it
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("promtool")


@pytest.fixture(scope="module")
def promtool() -> str:
    found = find_promtool()
    if found is None:
        message = (
            f"promtool is neither next to {sys.executable} nor on PATH; install it with `{INSTALL}`"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


def run(
    promtool: str, *args: str, stdin: str | None = None, cwd: Path = REPO
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
        check=False,
    )


def exported_names(registry: CollectorRegistry) -> dict[str, set[str]]:
    """Each metric's documented name (`_total` for counters) and every series name it exports."""
    names: dict[str, set[str]] = {}
    for family in registry.collect():
        base = family.name
        if family.type == "counter":
            names[f"{base}_total"] = {f"{base}_total", f"{base}_created"}
        elif family.type == "histogram":
            names[base] = {f"{base}{s}" for s in ("_bucket", "_sum", "_count", "_created")}
        else:
            names[base] = {base}
    return names


def registries() -> list[CollectorRegistry]:
    """Every process's metrics: the broker's, and the audit witness's (its own process)."""
    return [BrokerMetrics().registry, WitnessMetrics().registry]


def all_series_names() -> set[str]:
    return set().union(*(set().union(*exported_names(r).values()) for r in registries()))


def alert_blocks() -> dict[str, str]:
    """Alert name -> the text of its rule (the rules file lists one `- alert:` per rule)."""
    parts = re.split(r"^\s*- alert: ", RULES.read_text(), flags=re.MULTILINE)[1:]
    return {part.split("\n", 1)[0].strip(): part for part in parts}


def walk(node: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            yield from walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item)


def dashboard_queries(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression of a dashboard: panel targets and variable queries."""
    queries = [value for key, value in walk(dashboard.get("panels", [])) if key == "expr"]
    for variable in dashboard["templating"]["list"]:
        queries.append(str(variable.get("definition", "")))
    return queries


# ------------------------------------------------------------------ promtool on the files


def test_prometheus_config_is_valid(promtool: str, tmp_path: Path) -> None:
    # Its TLS files exist only where a facility is installed: the full check, rule files
    # included, runs against one `qtestbed init` wrote (tests/e2e/test_prometheus_scrape.py).
    for cwd in (REPO, tmp_path):
        done = run(promtool, "check", "config", "--syntax-only", str(CONFIG), cwd=cwd)
        assert done.returncode == 0, done.stdout + done.stderr


def test_alert_rules_are_valid(promtool: str) -> None:
    done = run(promtool, "check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(alert_blocks())} rules found" in done.stdout


def test_alert_rule_unit_tests_pass(promtool: str) -> None:
    done = run(promtool, "test", "rules", str(RULE_TESTS))
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_is_labelled_annotated_and_unit_tested() -> None:
    tests = RULE_TESTS.read_text()
    fired = set(re.findall(r"alertname: (\S+)\n\s+exp_alerts:\n", tests))
    quiet = set(re.findall(r"alertname: (\S+)\n\s+exp_alerts: \[\]", tests))
    alerts = alert_blocks()
    assert len(alerts) >= 18
    for name, rule in alerts.items():
        assert re.search(r"\n\s+severity: (page|ticket)\n", rule), f"{name}: severity"
        assert "summary:" in rule, f"{name}: summary"
        assert "description:" in rule, f"{name}: description"
        assert "qtestbed " in rule, f"{name}: the description should name a qtestbed command"
        assert name in fired, f"{name} has no test case where it fires"
        assert name in quiet, f"{name} has no test case where it stays quiet"


def test_one_alert_per_anomaly_detector() -> None:
    detectors = {
        "submission_rate_spike",
        "submission_volume_spike",
        "denial_burst",
        "attestation_failure_burst",
        "attestation_failure_burst_facility",
        "measurement_drift",
        "canary_fidelity_low",
        "export_class_crossing",
        "front_door_refusal_burst",
    }
    alerting = [
        detector
        for rule in alert_blocks().values()
        for detector in set(re.findall(r'qtestbed_anomalies_total\{detector="([a-z_]+)"\}', rule))
    ]
    assert sorted(alerting) == sorted(detectors)


def test_dashboard_queries_parse(promtool: str, tmp_path: Path) -> None:
    rules = []
    for path in DASHBOARDS:
        for n, query in enumerate(dashboard_queries(json.loads(path.read_text()))):
            if query.startswith("label_values("):
                continue  # a Grafana function, not PromQL
            for variable, value in GRAFANA_VARIABLES.items():
                query = query.replace(variable, value)
            query = query.replace("$device", ".*")
            assert "$" not in query, f"{path.name}: unknown variable in {query}"
            rules.append({"record": f"dashboard:{path.stem.replace('-', '_')}:{n}", "expr": query})
    as_rules = tmp_path / "dashboard-queries.json"  # JSON is YAML, so promtool reads it
    as_rules.write_text(json.dumps({"groups": [{"name": "dashboards", "rules": rules}]}))
    done = run(promtool, "check", "rules", str(as_rules))
    assert done.returncode == 0, done.stdout + done.stderr


# ------------------------------------------------------------------ names against the registry


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_dashboard_is_importable(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    assert dashboard["uid"] == path.stem
    assert dashboard["title"]
    assert dashboard["schemaVersion"] >= 39
    assert dashboard["id"] is None
    inputs = {i["name"]: i for i in dashboard["__inputs"]}
    assert inputs["DS_PROMETHEUS"]["pluginId"] == "prometheus"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert "$device" in json.dumps(dashboard["panels"])
    assert variables["device"]["definition"].startswith("label_values(qtestbed_")
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for key, value in walk(dashboard):
        if key == "datasource" and isinstance(value, dict) and value["type"] == "prometheus":
            assert value["uid"] == "${DS_PROMETHEUS}"


def test_alerts_and_dashboards_use_only_exported_metrics() -> None:
    exported = all_series_names()
    sources = {RULES.name: RULES.read_text()}
    for path in DASHBOARDS:
        sources[path.name] = "\n".join(dashboard_queries(json.loads(path.read_text())))
    for name, text in sources.items():
        used = set(METRIC_NAME.findall(text))
        assert used, name
        assert used <= exported, (
            f"{name} uses metrics the broker does not export: {used - exported}"
        )


def test_every_metric_is_documented_and_shown() -> None:
    docs = DOCS.read_text()
    dashboards = "\n".join(
        "\n".join(dashboard_queries(json.loads(p.read_text()))) for p in DASHBOARDS
    )
    shown = set(METRIC_NAME.findall(dashboards))
    documented_names = {k: v for r in registries() for k, v in exported_names(r).items()}
    for documented, series in documented_names.items():
        assert f"`{documented}`" in docs, f"{documented} is missing from docs/metrics.md"
        assert series & shown, f"no dashboard shows {documented}"


def test_every_broker_metric_passes_promtool_lint(promtool: str) -> None:
    """Every metric with one series (a live scrape only shows the labelled ones already used)."""
    for metrics in (BrokerMetrics(), WitnessMetrics()):
        for metric in vars(metrics).values():
            if isinstance(metric, MetricWrapperBase) and metric._labelnames:
                metric.labels(*("x" for _ in metric._labelnames))
        done = run(promtool, "check", "metrics", stdin=generate_latest(metrics.registry).decode())
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout + done.stderr == ""


# ------------------------------------------------------------------ a live broker


def test_live_scrape_passes_promtool_lint(promtool: str, tmp_path: Path) -> None:
    with LocalFacility(tmp_path / "f") as fac:
        fac.start_broker()
        fac.start_driver("sim-open")
        fac.wait_available(fac.client("olivia"), "sim-open")
        alice = fac.client("alice")
        job = alice.submit(ghz_qasm2(3), device_id="sim-open", shots=100).job
        wait_state(alice, job.job_id, "COMPLETED")
        assert fac.addresses is not None
        assert fac.addresses.metrics.startswith("https://127.0.0.1:")
        text = scrape(fac)

    done = run(promtool, "check", "metrics", stdin=text)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout + done.stderr == "", "promtool lint: " + done.stdout + done.stderr
    scraped = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line[:1] != "#"}
    scraped.discard("")
    assert scraped <= all_series_names()
    assert {"qtestbed_jobs_total", "qtestbed_queue_wait_seconds_bucket"} <= scraped
