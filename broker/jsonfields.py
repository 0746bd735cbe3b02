"""Typed reads from one JSON object, with errors that name the object and the field.

Standard library only, so the policy package can use it and still run on its own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

MISSING: Any = object()


class JsonFields:
    """`fields.text("tier")` returns a string or raises `error("<where>.tier must be ...")`."""

    def __init__(self, raw: Any, where: str, error: Callable[[str], Exception]) -> None:
        self.error = error
        if not isinstance(raw, Mapping):
            raise error(f"{where}: expected an object, got {type(raw).__name__}")
        self.raw: Mapping[str, Any] = raw
        self.where = where

    def get(self, key: str, default: Any = MISSING) -> Any:
        if key in self.raw:
            return self.raw[key]
        if default is MISSING:
            raise self.error(f"{self.where}.{key} is required")
        return default

    def text(self, key: str, default: Any = MISSING) -> str:
        value = self.get(key, default)
        if not isinstance(value, str):
            raise self.error(f"{self.where}.{key} must be a string")
        return value

    def integer(self, key: str, default: Any = MISSING) -> int:
        value = self.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(f"{self.where}.{key} must be an integer")
        return value

    def count(self, key: str, default: int = 0) -> int:
        value = self.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self.error(f"{self.where}.{key} must be a whole number, 0 or more")
        return value

    def number(self, key: str, default: Any = MISSING) -> float:
        value = self.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(f"{self.where}.{key} must be a number")
        return float(value)

    def flag(self, key: str, default: Any = MISSING) -> bool:
        value = self.get(key, default)
        if not isinstance(value, bool):
            raise self.error(f"{self.where}.{key} must be true or false")
        return value

    def names(self, key: str, default: Sequence[str] | frozenset[str] = ()) -> list[str]:
        value = self.get(key, default)
        if not isinstance(value, list | tuple | frozenset | set) or not all(
            isinstance(v, str) for v in value
        ):
            raise self.error(f"{self.where}.{key} must be a list of strings")
        return list(value)
