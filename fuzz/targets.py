"""The fuzz targets by name; each is a module with `one_input(data)` and maybe `prepare()`."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fuzz.world import SEEDS

# Targets whose input is JSON get a dictionary of its tokens and our field names.
JSON_TARGETS = frozenset({"evidence", "receipts", "result_bundle", "audit_inclusion"})
JSON_DICTIONARY = Path(__file__).parent / "json.dict"

NAMES = (
    "submit_jobs",
    "qasm2",
    "qasm3",
    "qpy",
    "link_frames",
    "evidence",
    "receipts",
    "result_bundle",
    "audit_inclusion",
)


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    one_input: Callable[[bytes], None]
    prepare: Callable[[], None]

    @property
    def seeds(self) -> Path:
        return SEEDS / self.name

    @property
    def dictionary(self) -> Path | None:
        return JSON_DICTIONARY if self.name in JSON_TARGETS else None


def load(name: str) -> Target:
    if name not in NAMES:
        raise ValueError(f"unknown fuzz target {name!r}; one of {', '.join(NAMES)}")
    module = importlib.import_module(f"fuzz.{name}")
    return Target(name, module.one_input, getattr(module, "prepare", lambda: None))
