"""A started core per test (see harness.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.unit.core.harness import Core


@pytest.fixture
async def core() -> AsyncIterator[Core]:
    started = await Core().start()
    try:
        yield started
    finally:
        started.close()
