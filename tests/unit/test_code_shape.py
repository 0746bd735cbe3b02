"""The shape of the hand-written code stays small: module and function lengths, measured the
same way every time (all lines of each `.py` file of the product packages, generated stubs
left out; a function from its `def` to its last line, nested ones counted on their own too).

Limits from the restructuring issue: modules median <= 120 lines and p90 <= 300; functions
median <= 10 and p90 <= 35. Run this file with `-s` to see the figures.
"""

from __future__ import annotations

import ast
import statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("attestation", "broker", "drivers", "qtestbed")


def _percentile(values: list[int], fraction: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    k = (len(ordered) - 1) * fraction
    low = int(k)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


def _hand_written() -> list[Path]:
    return sorted(
        path
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if "_pb2" not in path.name
    )


def _lengths() -> tuple[list[int], list[int]]:
    modules, functions = [], []
    for path in _hand_written():
        text = path.read_text()
        modules.append(len(text.splitlines()))
        for node in ast.walk(ast.parse(text, str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                functions.append(node.end_lineno - node.lineno + 1)
    return modules, functions


def test_modules_and_functions_stay_small() -> None:
    modules, functions = _lengths()
    figures = {
        "modules": len(modules),
        "module median": statistics.median(modules),
        "module p90": round(_percentile(modules, 0.9), 1),
        "functions": len(functions),
        "function median": statistics.median(functions),
        "function p90": round(_percentile(functions, 0.9), 1),
    }
    print(figures)
    assert figures["module median"] <= 120, figures
    assert figures["module p90"] <= 300, figures
    assert figures["function median"] <= 10, figures
    assert figures["function p90"] <= 35, figures
