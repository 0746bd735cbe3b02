"""The dependency rules hold for the code as it is, and the checker catches each kind of
violation when one is planted in a copy of a tree."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.import_rules import violations

ROOT = Path(__file__).resolve().parents[2]


def test_the_code_keeps_every_import_rule() -> None:
    assert violations(ROOT) == []


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for package in ("attestation", "broker", "drivers", "qtestbed"):
        (tmp_path / package).mkdir(exist_ok=True)
    return tmp_path


PLANTED = {
    "broker imports drivers": ("broker/x.py", "from drivers.agent import DriverAgent\n"),
    "broker imports the client": ("broker/x.py", "from qtestbed.client import Client\n"),
    "drivers import broker": ("drivers/x.py", "import broker.app\n"),
    "attestation imports ours": ("attestation/x.py", "from qtestbed.shared import wire\n"),
    "lower layer imports the client": ("qtestbed/shared/x.py", "from qtestbed import client\n"),
    "lower layer imports cryptography": ("qtestbed/shared/x.py", "import cryptography\n"),
    "lower layer imports attestation": ("qtestbed/shared/x.py", "from attestation import keys\n"),
    "client imports broker at module level": (
        "qtestbed/cli/demo.py",
        "from broker.app import Broker\n",
    ),
    "client imports broker lazily outside a launcher": (
        "qtestbed/client2.py",
        "def f():\n    from broker.app import Broker\n",
    ),
    "a service imports the link": ("broker/jobs/x.py", "from broker.link.fleet import Fleet\n"),
    "the link imports the gRPC edge": (
        "broker/link/x.py",
        "from broker.grpc.status import abort\n",
    ),
    "protobuf in a service": ("broker/jobs/x.py", "from qtestbed.v1 import jobs_pb2\n"),
    "a service imports the /metrics edge": (
        "broker/access/x.py",
        "from broker.scrape.gate import ScrapeGate\n",
    ),
    "the link imports the /metrics edge": (
        "broker/link/x.py",
        "from broker.scrape.server import MetricsEndpoint\n",
    ),
    "protobuf in the /metrics edge": ("broker/scrape/x.py", "from qtestbed.v1 import jobs_pb2\n"),
    "the /metrics edge imports the composition root": (
        "broker/scrape/x.py",
        "from broker.wiring import Components\n",
    ),
    "a model imports a service": (
        "broker/jobs/model.py",
        "from broker.jobs.ledger import JobLedger\n",
    ),
    "the store imports a service": (
        "broker/store/x.py",
        "from broker.access.registry import AccessRegistry\n",
    ),
}


@pytest.mark.parametrize("case", sorted(PLANTED))
def test_a_planted_violation_is_caught(tmp_path: Path, case: str) -> None:
    name, text = PLANTED[case]
    found = violations(_tree(tmp_path, {name: text}))
    assert len(found) == 1, found
    assert found[0].startswith(name)


def test_lazy_imports_in_a_launcher_and_typing_imports_are_allowed(tmp_path: Path) -> None:
    tree = _tree(
        tmp_path,
        {
            "qtestbed/cli/demo.py": "def run():\n    from broker.app import Broker\n",
            "qtestbed/x.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n    from broker.app import BrokerAddresses\n"
            ),
            "broker/jobs/model.py": "from qtestbed.shared.circuits import CircuitFormat\n",
        },
    )
    assert violations(tree) == []
