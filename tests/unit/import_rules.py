"""The dependency rules of the code base, checked by reading imports (AST), not by running.

Packages and what they may import:
- `attestation`: nothing of ours (a verifier library on its own);
- the lower layer (`qtestbed.shared`, the generated `qtestbed.v1`): the standard library,
  Qiskit, pyzmq, protobuf and grpc, itself, and `attestation.secretfile` (the one writer of
  secret files, standard library only);
- `drivers`: `attestation` and the lower layer, never `broker` nor the client package;
- `broker`: `attestation` and the lower layer, never `drivers` nor the client package;
- the client package (the rest of `qtestbed`): never `broker` or `drivers` at module level;
  only the local commands that run broker or driver code in this process, and the harness
  that starts them, may import them, and only inside the function that runs them.
Inside `broker`, floors (see the README): models and their documents import only models; the
store only models and the audit chain; services never the driver link, the gRPC edge or the
composition root; the link never the gRPC edge or the /metrics edge (`broker.scrape`, which
uses the gRPC edge's transport-neutral identity checks); protobuf only in `broker.grpc` and the
link codec; the policy package only itself.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

OURS = ("attestation", "broker", "drivers", "qtestbed", "tests", "bench")
LOWER = ("qtestbed.shared", "qtestbed.v1")
LOWER_THIRD_PARTY = ("qiskit", "qiskit_qasm3_import", "zmq", "google", "grpc")
LOWER_OURS = ("attestation.secretfile",)  # stdlib only, shared by every writer of a secret
# Client-package modules that run broker or driver code in this process (lazily).
LAUNCHERS = frozenset(
    {
        "qtestbed.cli.audit",
        "qtestbed.cli.demo",
        "qtestbed.cli.migrate",
        "qtestbed.cli.policy",
        "qtestbed.cli.processes",
        "qtestbed.cli.report",
        "qtestbed.facility_devices",
        "qtestbed.driver_check_setup",
        "qtestbed.facility_init",
        "qtestbed.testing",
    }
)
_BROKER_EDGES = (
    "broker.link",
    "broker.grpc",
    "broker.scrape",
    "broker.app",
    "broker.wiring",
    "broker.gauges",
    "broker.workers",
)
_BROKER_TOP = ("broker.app", "broker.wiring", "broker.gauges", "broker.embedded", "broker.workers")
_SERVICES = (
    "broker.jobs",
    "broker.access",
    "broker.devices",
    "broker.audit",
    "broker.anomaly",
    "broker.policy",
    "broker.store",
    "broker.report",
)
_PROTOBUF = ("qtestbed.v1", "google.protobuf")


@dataclass(frozen=True, slots=True)
class Import:
    module: str  # the importing module, dotted
    target: str  # what it imports, dotted
    line: int
    lazy: bool  # inside a function (runs only when called)
    typing_only: bool  # under `if TYPE_CHECKING:`


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(root: Path, path: Path) -> Iterator[Import]:
    module = module_name(root, path)
    tree = ast.parse(path.read_text(), str(path))
    yield from _walk(tree, module, lazy=False, typing_only=False)


def _walk(node: ast.AST, module: str, *, lazy: bool, typing_only: bool) -> Iterator[Import]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import):
            for alias in child.names:
                yield Import(module, alias.name, child.lineno, lazy, typing_only)
        elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
            yield Import(module, child.module, child.lineno, lazy, typing_only)
        elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            yield from _walk(child, module, lazy=True, typing_only=typing_only)
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            yield from _walk(child, module, lazy=lazy, typing_only=True)
        else:
            yield from _walk(child, module, lazy=lazy, typing_only=typing_only)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _within(name: str, prefixes: tuple[str, ...] | str) -> bool:
    if isinstance(prefixes, str):
        prefixes = (prefixes,)
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _is_model(name: str) -> bool:
    leaf = name.rpartition(".")[2]
    return leaf in ("model", "session_model", "documents") or name == "broker.jsonfields"


def _package_rule(imp: Import) -> str | None:
    m, t = imp.module, imp.target
    if _within(m, "attestation") and _within(t, OURS) and not _within(t, "attestation"):
        return "attestation imports nothing of ours"
    if _within(m, LOWER):
        top = t.partition(".")[0]
        allowed = _within(t, LOWER) or _within(t, LOWER_OURS) or top in LOWER_THIRD_PARTY
        if not (top in sys.stdlib_module_names or allowed):
            return "the lower layer imports only the standard library, Qiskit, pyzmq and the stubs"
        return None
    client_target = _within(t, "qtestbed") and not _within(t, LOWER)
    if _within(m, "drivers") and (_within(t, "broker") or client_target):
        return "drivers never import broker or the client package"
    if _within(m, "broker") and (_within(t, "drivers") or client_target):
        return "broker never imports drivers or the client package"
    reaches_in = _within(t, ("broker", "drivers")) and not imp.typing_only
    launched = m in LAUNCHERS and imp.lazy
    if _within(m, "qtestbed") and reaches_in and not launched:
        return "the client package reaches broker/drivers only lazily, from a local command"
    return None


def _broker_rule(imp: Import) -> str | None:
    m, t = imp.module, imp.target
    if not _within(m, "broker"):
        return None
    if _within(t, _PROTOBUF) and not (_within(m, "broker.grpc") or m == "broker.link.codec"):
        return "protobuf stops at broker.grpc and broker.link.codec"
    if not _within(t, "broker") or imp.typing_only:
        return None
    if _is_model(m) and not _is_model(t):
        return "models import only models"
    if _within(m, "broker.store") and not (
        _within(t, "broker.store") or _is_model(t) or t in ("broker.audit.chain",)
    ):
        return "the store imports only models and the audit chain"
    if _within(m, "broker.policy") and not (_within(t, "broker.policy") or _is_model(t)):
        return "the policy package runs on its own"
    if _within(m, _SERVICES) and _within(t, _BROKER_EDGES):
        return "services never import the driver link, an edge or the composition root"
    if _within(m, "broker.link") and _within(t, ("broker.grpc", "broker.scrape", *_BROKER_TOP)):
        return "the driver link never imports the other edges or the composition root"
    if _within(m, ("broker.grpc", "broker.scrape")) and _within(t, _BROKER_TOP):
        return "an edge never imports the composition root"
    return None


def violations(root: Path) -> list[str]:
    """Every import in the product packages under `root` that breaks a rule, one line each."""
    found = []
    for package in ("attestation", "broker", "drivers", "qtestbed"):
        for path in sorted((root / package).rglob("*.py")):
            for imp in imports(root, path):
                rule = _package_rule(imp) or _broker_rule(imp)
                if rule:
                    where = f"{path.relative_to(root)}:{imp.line}"
                    found.append(f"{where}: {imp.module} imports {imp.target}: {rule}")
    return found
