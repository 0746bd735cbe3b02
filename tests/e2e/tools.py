"""External tools the tests run (linters, container engines): where they are missing, a test
is skipped on a workstation and fails in CI, which `make setup` has provisioned."""

from __future__ import annotations

import os

import pytest


def required(found: str | None, message: str) -> str:
    """`found` (a tool's path); otherwise skip, or under CI=true fail, saying `message`."""
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found
