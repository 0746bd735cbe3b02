"""What one call did inside the core, recorded so that two calls can be compared step by step.

`Recorder` wraps, on one core's instances only, everything a lookup by id may touch: the policy
engine's entry points and Cedar itself (every evaluation and every entity-set parse), the
clearance gate, the registries its attributes come from, every store call (through the
runner), every anomaly observation; and it collects the audit entries, metric changes and log
records the call left behind, and its answer. A hidden object and an absent one must leave
equal records: the same steps in the same order with the same arguments, the same answer.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import cedarpy
import pytest

from broker.errors import BrokerError
from tests.unit.core.harness import Core, audit_mark, audit_since

Sample = tuple[str, tuple[tuple[str, str], ...]]


@dataclass(frozen=True, kw_only=True, slots=True)
class Work:
    steps: tuple[str, ...]  # "component.method" (with arguments where they are comparable)
    audit: tuple[tuple[str, str, str, str], ...]  # kind, actor, subject, detail
    metrics: tuple[tuple[Sample, float], ...]  # every sample the call changed, by how much
    logs: tuple[tuple[str, str, str], ...]  # logger, level, message
    answer: tuple[str, str, str]  # error code, detail, rule id; ("OK", "", "") without one

    def count(self, step: str) -> int:
        return sum(1 for s in self.steps if s == step or s.startswith(step + "("))


# Which methods of which core objects are recorded, by the name the step gets.
_WATCHED: dict[str, tuple[str, ...]] = {
    "policy": ("decide", "evaluate", "verdict", "explain"),
    "gate": ("check", "visible", "visible_by_id", "request"),
    "registry": ("get", "num_qubits"),
    "exports": ("of", "controlled"),
    "schedule": ("state", "availability"),
    "access": ("principal",),
    "anomaly": ("submission", "refusal"),
    "sessions": ("for_submit", "get"),
}
# Steps whose arguments are the same in two worlds that differ only in the hidden object.
_WITH_ARGUMENTS = frozenset({"registry", "anomaly", "access", "store", "sessions"})


class Recorder:
    def __init__(self, core: Core, monkeypatch: pytest.MonkeyPatch) -> None:
        self.core = core
        self._steps: list[str] = []
        registries = core.parts.registries
        targets = {
            "policy": registries.gate.engine,
            "gate": registries.gate,
            "registry": registries.devices,
            "exports": registries.exports,
            "schedule": registries.schedule,
            "access": registries.access,
            "anomaly": registries.anomalies,
            "sessions": core.parts.jobs.sessions,
        }
        for component, methods in _WATCHED.items():
            for name in methods:
                original = getattr(targets[component], name, None)
                if original is None:  # not every version of the code has every entry point
                    continue
                spy = self._spy(component, name, original)
                monkeypatch.setattr(targets[component], name, spy)
        monkeypatch.setattr(core.runner, "call", self._store_spy(core.runner.call))

    def _spy(self, component: str, name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(original)
        def spy(*args: Any, **kwargs: Any) -> Any:
            self._steps.append(_step(component, name, args, kwargs))
            return original(*args, **kwargs)

        return spy

    def _store_spy(self, call: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def spy(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
            self._steps.append(_step("store", fn.__name__, args, kwargs))
            result = await call(fn, *args, **kwargs)
            # What came back, by kind: a row that is someone else's must not come back at all.
            self._steps.append(f"store.{fn.__name__} -> {type(result).__name__}")
            return result

        return spy

    async def run(self, call: Callable[[], Awaitable[object]]) -> Work:
        """Run `call` and return what it did (the steps, side effects and answer)."""
        mark = audit_mark(self.core)
        before = _samples(self.core)
        self._steps.clear()
        running = _RUNNING.set(self._steps)
        try:
            with _logs() as logs:
                answer = await _answer(call)
                await self.core.parts.registries.anomalies.drain()
        finally:
            _RUNNING.reset(running)
        steps = tuple(self._steps)
        after = _samples(self.core)
        changed = {k: after[k] - before.get(k, 0.0) for k in after if after[k] != before.get(k)}
        return Work(
            steps=steps,
            audit=tuple(
                (e.kind, e.actor, e.subject, repr(sorted(e.detail.items())))
                for e in audit_since(self.core, mark)
            ),
            metrics=tuple(sorted(changed.items())),
            logs=tuple(logs),
            answer=answer,
        )


async def _answer(call: Callable[[], Awaitable[object]]) -> tuple[str, str, str]:
    try:
        await call()
    except BrokerError as exc:
        return exc.code.value, exc.detail, exc.rule_id
    return "OK", "", ""


# The steps of the recorder whose `run` is in progress: Cedar is one module for every core.
_RUNNING: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "recording", default=None
)


def watch_cedar(monkeypatch: pytest.MonkeyPatch) -> None:
    """Record every Cedar evaluation and entity-set parse, whoever makes it, as a step of the
    recorder running at the time (once per test, before any `Recorder.run`)."""
    for owner, name, step in (
        (cedarpy, "is_authorized", "cedar.is_authorized"),
        (cedarpy.Entities, "from_json_str", "cedar.parse_entities"),
    ):
        original = getattr(owner, name)

        def spy(*args: Any, _original: Any = original, _step: str = step, **kwargs: Any) -> Any:
            steps = _RUNNING.get()
            if steps is not None:
                steps.append(_step)
            return _original(*args, **kwargs)

        monkeypatch.setattr(owner, name, staticmethod(spy) if owner is not cedarpy else spy)


def _step(component: str, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    if component not in _WITH_ARGUMENTS:
        return f"{component}.{name}"
    shown = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in sorted(kwargs.items())]
    return f"{component}.{name}({', '.join(shown)})"


def _samples(core: Core) -> dict[Sample, float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in core.metrics.registry.collect()
        for sample in family.samples
        if not sample.name.endswith("_created")  # creation times, not counts
    }


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seen: list[tuple[str, str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append((record.name, record.levelname, record.getMessage()))


@contextlib.contextmanager
def _logs() -> Iterator[list[tuple[str, str, str]]]:
    """Every log record, of every level, while the block runs."""
    handler = _Collect()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler.seen
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
