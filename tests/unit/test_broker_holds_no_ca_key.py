"""The broker holds no CA key: its settings name no such file, and the one private key its code
loads is its own TLS key. (tests/e2e/test_onboarding.py shows the running broker never opens
one; this keeps a later change from adding one quietly.)"""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

from broker.settings import BrokerSettings

ROOT = Path(__file__).resolve().parents[2]
# Every way this code base turns bytes or a file into a private key.
_KEY_LOADERS = frozenset(
    {"load_private_key", "load_pem_private_key", "load_der_private_key", "from_pem"}
)


def test_the_broker_settings_name_only_its_own_keys() -> None:
    keys = {f.name for f in dataclasses.fields(BrokerSettings) if "key" in f.name}
    assert keys == {"server_key", "link_secret_key"}  # TLS identity, CurveZMQ link


def _calls(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name in _KEY_LOADERS:
            found.append(ast.unparse(node))
    return found


def test_the_only_private_key_the_broker_loads_is_its_tls_key() -> None:
    loads = {
        (str(path.relative_to(ROOT)), call)
        for path in sorted((ROOT / "broker").rglob("*.py"))
        for call in _calls(path)
    }
    # Any SigningKey.from_pem (or even VerifyKey.from_pem, which the broker never calls) shows.
    assert loads == {("broker/app.py", "load_private_key(settings.server_key)")}
