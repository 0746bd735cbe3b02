"""deploy/kubernetes as shipped: every object validates (strictly: no unknown field) against the
pinned Kubernetes version's schemas, the PrometheusRule is exactly what `generate.py rules`
makes from deploy/prometheus/rules (and passes promtool), the objects fit together (names,
keys, labels and ports that one object takes from another exist), the pods are hardened, and
the Secrets `generate.py facility` makes from a real `qtestbed init` facility hold no CA key.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.console import qtestbed
from tests.e2e.test_prometheus import promtool as promtool  # the fixture, shared
from tests.e2e.test_prometheus import run as run_promtool
from tests.e2e.tools import required

pytestmark = pytest.mark.slow  # each generate/validate run is its own interpreter

REPO = Path(__file__).resolve().parents[2]
KUBE = REPO / "deploy" / "kubernetes"
GENERATE = KUBE / "generate.py"
# The Kubernetes release the manifests are held to (kubernetes-validate's bundled schemas).
KUBERNETES_VERSION = "1.33.0"
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}  # prometheus-operator's; not in core schemas
MANIFESTS = sorted(p for p in KUBE.glob("*.yaml") if p.name != "kustomization.yaml")


def load(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def every_object() -> list[dict[str, Any]]:
    return [doc for path in MANIFESTS for doc in load(path)]


def generate(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(GENERATE), *args], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def validate(docs: list[dict[str, Any]]) -> list[str]:
    """kubernetes-validate's findings for each core object, strict; CRD kinds are checked below."""
    import kubernetes_validate

    problems = []
    for doc in docs:
        if doc["kind"] in CRD_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            problems.append(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message}")
    return problems


def test_the_manifests_validate_against_the_pinned_kubernetes() -> None:
    docs = every_object()
    assert validate(docs) == []
    listed = yaml.safe_load((KUBE / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == [p.name for p in MANIFESTS if p.name != "migrate-job.yaml"]


def test_the_validator_refuses_an_unknown_field_and_a_wrong_type() -> None:
    """The check above can fail: one misspelt field and one string for a number are caught."""
    [misspelt] = load(KUBE / "broker-deployment.yaml")
    misspelt["spec"]["replica"] = 2
    [mistyped] = load(KUBE / "broker-deployment.yaml")
    mistyped["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "x"
    unknown, wrong = validate([misspelt]), validate([mistyped])
    assert len(unknown) == 1
    assert "'replica' was unexpected" in unknown[0]
    assert wrong == ["Deployment/qtestbed-broker: 'x' is not of type 'integer'"]


def test_the_prometheus_rule_is_generated_from_the_shipped_alerts(promtool: str) -> None:
    shipped = (KUBE / "prometheusrule.yaml").read_text()
    assert shipped == generate("rules"), "run: python deploy/kubernetes/generate.py rules > ..."
    [rule] = load(KUBE / "prometheusrule.yaml")
    groups = [
        group
        for path in sorted((REPO / "deploy" / "prometheus" / "rules").glob("*.yml"))
        for group in yaml.safe_load(path.read_text())["groups"]
    ]
    assert rule["spec"]["groups"] == groups
    alerts = [r["alert"] for g in groups for r in g["rules"] if "alert" in r]
    assert len(alerts) >= 20
    done = run_promtool(
        promtool, "check", "rules", "/dev/stdin", stdin=yaml.safe_dump(rule["spec"])
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def checkov() -> str:
    """checkov from its own virtualenv beside the project's (`make setup` makes it)."""
    beside = Path(sys.executable).parents[1] / "checkov" / "bin" / "checkov"
    found = str(beside) if beside.is_file() else shutil.which("checkov")
    return required(found, f"checkov is neither at {beside} nor on PATH; `make setup` installs it")


def run_checkov(checkov: str, folder: Path) -> dict[str, Any]:
    """checkov's Kubernetes checks on `folder`, offline; its JSON summary and failures."""
    done = subprocess.run(
        [checkov, "-d", str(folder), "--framework", "kubernetes", "--skip-download",
         "-o", "json"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def test_checkov_passes_the_manifests(checkov: str) -> None:
    report = run_checkov(checkov, KUBE)
    failed = [(c["check_id"], c["resource"]) for c in report["results"]["failed_checks"]]
    assert failed == []
    assert report["summary"]["parsing_errors"] == 0
    assert report["summary"]["passed"] >= 200
    skipped = {(c["check_id"], c["resource"]) for c in report["results"]["skipped_checks"]}
    assert {check for check, _ in skipped} == {"CKV_K8S_43"}  # image digests: see the files


def test_checkov_fails_a_weakened_deployment(checkov: str, tmp_path: Path) -> None:
    """The lint can fail: a broker that may write its root filesystem, keeps its capabilities
    and reads a secret from its environment is caught, check by check."""
    [deployment] = load(KUBE / "broker-deployment.yaml")
    broker = deployment["spec"]["template"]["spec"]["containers"][0]
    broker["securityContext"]["readOnlyRootFilesystem"] = False
    del broker["securityContext"]["capabilities"]
    broker["env"] = [
        {"name": "PGPASSWORD", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}
    ]
    (tmp_path / "broker.yaml").write_text(yaml.safe_dump(deployment))
    report = run_checkov(checkov, tmp_path)
    failed = {c["check_id"] for c in report["results"]["failed_checks"]}
    assert {"CKV_K8S_22", "CKV_K8S_37", "CKV_K8S_35"} <= failed


def _pods() -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in every_object():
        if doc["kind"] in ("Deployment", "Job"):
            yield doc["metadata"]["name"], doc["spec"]["template"]["spec"]


def test_every_pod_is_hardened_with_limits_and_probes() -> None:
    pods = dict(_pods())
    assert set(pods) == {"qtestbed-broker", "qtestbed-driver-sim-open", "qtestbed-migrate"}
    for name, pod in pods.items():
        context = pod["securityContext"]
        assert context["runAsNonRoot"] is True, name
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert pod["automountServiceAccountToken"] is False, name
        for container in pod["containers"] + pod.get("initContainers", []):
            own = container["securityContext"]
            assert own["readOnlyRootFilesystem"] is True, (name, container["name"])
            assert own["allowPrivilegeEscalation"] is False, (name, container["name"])
            assert own["capabilities"] == {"drop": ["ALL"]}, (name, container["name"])
            assert set(container["resources"]) == {"requests", "limits"}
        if name != "qtestbed-migrate":
            [main] = pod["containers"]
            assert {"startupProbe", "readinessProbe", "livenessProbe"} <= set(main)
    [broker] = load(KUBE / "broker-deployment.yaml")
    assert broker["spec"]["replicas"] >= 2
    probe = pods["qtestbed-broker"]["containers"][0]["livenessProbe"]
    assert probe["grpc"] == {"port": 8081}  # grpc.health.v1 on the health port


def test_only_drivers_reach_the_link_port() -> None:
    policies = [d for d in load(KUBE / "networkpolicies.yaml")]
    deny = next(p for p in policies if p["metadata"]["name"] == "default-deny")
    assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress"]}
    link_rules = [
        rule
        for p in policies
        for rule in p["spec"].get("ingress", [])
        if any(port["port"] == 5555 for port in rule.get("ports", []))
    ]
    assert link_rules == [
        {
            "from": [
                {
                    "podSelector": {
                        "matchLabels": {
                            "app.kubernetes.io/name": "qtestbed",
                            "app.kubernetes.io/component": "driver",
                        }
                    }
                }
            ],
            "ports": [{"port": 5555, "protocol": "TCP"}],
        }
    ]
    # No other rule opens every port: each names its ports.
    assert all(rule.get("ports") for p in policies for rule in p["spec"].get("ingress", []))


@pytest.fixture(scope="module")
def facility(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    root = tmp_path_factory.mktemp("k8s") / "fac"
    assert qtestbed("init", str(root)).returncode == 0
    pgpass = root.parent / "pgpass"
    pgpass.write_text("postgres.qtestbed.svc:5432:qtestbed:qtestbed:not-a-real-password\n")
    text = generate("facility", str(root), "--pgpass", str(pgpass))
    return root, [doc for doc in yaml.safe_load_all(text) if doc]


def test_the_facility_objects_validate_and_hold_no_ca_key(
    facility: tuple[Path, list[dict[str, Any]]],
) -> None:
    root, docs = facility
    assert validate(docs) == []
    values = [v for doc in docs for v in (doc.get("data") or doc.get("stringData") or {}).values()]
    offline = root.parent / "fac-offline-ca"
    for key in sorted(offline.glob("*.key")):
        assert all(key.read_text().strip() not in value for value in values), key.name
    assert any((root / "broker" / "broker.key").read_text() == v for v in values)


def test_the_generator_refuses_a_facility_beside_a_ca_key(
    facility: tuple[Path, list[dict[str, Any]]],
) -> None:
    root, _ = facility
    (root / "ca" / "ca.key").write_text((root.parent / "fac-offline-ca" / "ca.key").read_text())
    try:
        done = subprocess.run(
            [sys.executable, str(GENERATE), "facility", str(root)],
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        (root / "ca" / "ca.key").unlink()
    assert done.returncode != 0
    assert "CA private key(s) in the facility folder" in done.stderr
    assert not done.stdout


def test_every_name_an_object_takes_from_another_exists(
    facility: tuple[Path, list[dict[str, Any]]],
) -> None:
    _, generated = facility
    objects = every_object() + generated
    keys = {
        (d["kind"], d["metadata"]["name"]): set(d.get("data") or d.get("stringData") or {})
        for d in objects
    }
    for name, pod in _pods():
        for kind, ref, key in _references(pod):
            assert (kind, ref) in keys, (name, kind, ref)
            assert key is None or key in keys[(kind, ref)], (name, kind, ref, key)
        assert ("ServiceAccount", pod["serviceAccountName"]) in keys
    service = next(d for d in objects if d["kind"] == "Service")
    monitor = next(d for d in objects if d["kind"] == "ServiceMonitor")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]
    assert "metrics" in {p["name"] for p in service["spec"]["ports"]}
    assert service["metadata"]["name"] == "qtestbed-broker"  # the alerts' job="qtestbed-broker"
    tls = monitor["spec"]["endpoints"][0]["tlsConfig"]
    assert "tls.key" in keys[("Secret", tls["keySecret"]["name"])]


def _references(pod: dict[str, Any]) -> Iterator[tuple[str, str, str | None]]:
    """(kind, name, key or None) of each ConfigMap and Secret the pod mounts or reads."""
    for volume in pod.get("volumes", []):
        for kind, field, name_key in (
            ("ConfigMap", "configMap", "name"),
            ("Secret", "secret", "secretName"),
        ):
            if field in volume:
                source = volume[field]
                items = source.get("items") or [{"key": None}]
                for item in items:
                    yield kind, source[name_key], item["key"]
    for container in pod["containers"]:
        for env in container.get("env", []):
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                yield "Secret", ref["name"], ref["key"]
