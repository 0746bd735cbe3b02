"""Simulated researcher workloads replayed through the submission detectors, as the broker feeds
them (one event per accepted call, its size as jobs): the false-positive and detection figures
of docs/anomalies.md.

    .venv/bin/python -m tests.unit.anomaly_workloads --seeds 10

Each seed simulates a week of 40 identities, each new (no history) at its first call:
- sweepers: parameter sweeps as SubmitJobs batches (20-100 circuits), one to five back to back,
  now and then a large 2-D sweep (up to 15 full batches in a row), a few sweeps a day;
- session users: VQE-like loops in a session, each iteration one job or a parameter-shift batch
  (8-40 circuits), the next sent once the last result is back (1.5-10 s, lognormal);
- interactive users: single jobs now and then, and sometimes an unbatched script loop of 10-50
  SubmitJob calls a fraction of a second apart;
- pipelines (service accounts): steady Poisson calls of 1-10 jobs all day, 2-20 calls a minute;
- about a third of identity-days are quiet (no work, or a handful of jobs).
Planted floods, each by its own identity (established or brand new) at a random working hour:
300 separate SubmitJob calls in a minute; 120 in a minute; 40 full batches in a minute.
"""

from __future__ import annotations

import argparse
import heapq
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from broker.anomaly.detectors import Finding
from broker.anomaly.monitor import submission_watch
from broker.settings import AnomalySettings

DAY = 86_400.0
MAX_BATCH = 100
KINDS = ("sweeper", "session", "interactive", "pipeline")
MIX = (14, 10, 13, 3)  # identities of each kind, 40 in all
FLOODS = {  # name: (calls, jobs per call, seconds)
    "300 calls/min": (300, 1, 60.0),
    "120 calls/min": (120, 1, 60.0),
    "40 full batches/min": (40, MAX_BATCH, 60.0),
}

Call = tuple[float, str, int]  # (time, identity, jobs)


def _working_hours(rng: np.random.Generator, day: int) -> tuple[float, float]:
    start = day * DAY + 3600.0 * float(np.clip(rng.normal(9.5, 1.5), 6.0, 14.0))
    return start, start + 3600.0 * float(rng.uniform(6.0, 10.0))


def _sweeps(rng: np.random.Generator, who: str, start: float, end: float) -> Iterator[Call]:
    for at in np.sort(rng.uniform(start, end, size=rng.integers(1, 7))):
        t = float(at)
        large = rng.random() < 0.1  # a 2-D sweep: many full batches in a row
        batches = int(rng.integers(5, 16)) if large else int(rng.integers(1, 6))
        for _ in range(batches):
            size = MAX_BATCH if large or rng.random() < 0.6 else int(rng.integers(20, MAX_BATCH))
            yield t, who, size
            t += float(rng.uniform(1.0, 6.0))  # encode and send the next batch


def _sessions(rng: np.random.Generator, who: str, start: float, end: float) -> Iterator[Call]:
    for at in np.sort(rng.uniform(start, end, size=rng.integers(1, 5))):
        t = float(at)
        gradient = rng.random() < 0.5  # parameter-shift: 2 circuits per parameter per step
        size = int(rng.integers(4, 21)) * 2 if gradient else 1
        for _ in range(int(rng.integers(50, 301))):
            yield t, who, size
            t += float(np.clip(rng.lognormal(np.log(4.0), 0.6), 1.5, 10.0))  # result back
            t += float(rng.uniform(0.1, 1.0))  # the optimiser's step


def _interactive(rng: np.random.Generator, who: str, start: float, end: float) -> Iterator[Call]:
    t = start
    while (t := t + float(rng.exponential(rng.uniform(120.0, 600.0)))) < end:
        yield t, who, 1
        if rng.random() < 0.02:  # an unbatched script loop
            for n in range(int(rng.integers(10, 51))):
                yield t + n * float(rng.uniform(0.1, 0.5)), who, 1


def _pipeline(rng: np.random.Generator, who: str, day: int) -> Iterator[Call]:
    per_minute = float(rng.uniform(2.0, 20.0))
    times = day * DAY + np.cumsum(rng.exponential(60.0 / per_minute, size=int(per_minute * 1500)))
    for t in times[times < (day + 1) * DAY]:
        yield float(t), who, int(rng.integers(1, 11))


def _day(rng: np.random.Generator, kind: str, who: str, day: int) -> Iterator[Call]:
    if rng.random() < 0.3:  # a quiet day: nothing, or a handful of single jobs
        for t in np.sort(rng.uniform(day * DAY, (day + 1) * DAY, size=rng.integers(0, 6))):
            yield float(t), who, 1
        return
    if kind == "pipeline":
        yield from _pipeline(rng, who, day)
        return
    start, end = _working_hours(rng, day)
    work = {"sweeper": _sweeps, "session": _sessions, "interactive": _interactive}[kind]
    yield from work(rng, who, start, end)


@dataclass(frozen=True, slots=True)
class Flood:
    name: str
    who: str
    start: float
    end: float


@dataclass(slots=True)
class Figures:
    identity_days: int = 0
    calls: int = 0
    jobs: int = 0
    false_positives: dict[str, int] = field(default_factory=dict)
    detected: dict[str, list[float]] = field(default_factory=dict)  # flood: delays to detect
    missed: dict[str, int] = field(default_factory=dict)


def workload(seed: int, days: int = 7) -> tuple[list[Call], list[Flood]]:
    """A week of normal work for 40 identities, and six planted floods (each of three kinds
    by one established identity and by one brand-new identity)."""
    rng = np.random.default_rng(seed)
    kinds = [kind for kind, n in zip(KINDS, MIX, strict=True) for _ in range(n)]
    streams = [
        sorted(c for day in range(days) for c in _day(rng, kind, f"{kind}-{i}", day))
        for i, kind in enumerate(kinds)
    ]
    floods = []
    for n, (name, (calls, jobs, seconds)) in enumerate(FLOODS.items()):
        for who in (f"{kinds[n]}-{n}", f"newcomer-{n}"):  # an established identity; a new one
            start = float(rng.integers(1, days)) * DAY + 3600.0 * float(rng.uniform(9.0, 17.0))
            gaps = np.sort(rng.uniform(0.0, seconds, size=calls))
            streams.append([(start + float(g), who, jobs) for g in gaps])
            floods.append(Flood(name, who, start, start + seconds))
    return list(heapq.merge(*streams)), floods


def replay(calls: list[Call], settings: AnomalySettings) -> list[tuple[float, Finding]]:
    watch = submission_watch(settings)
    return [(t, f) for t, who, jobs in calls for f in watch.observe(who, t, jobs)]


def measure(seeds: range, settings: AnomalySettings, days: int = 7) -> Figures:
    figures = Figures()
    for seed in seeds:
        calls, floods = workload(seed, days)
        findings = replay(calls, settings)
        flooders = {f.who: f for f in floods}
        figures.identity_days += sum(MIX) * days
        figures.calls += len(calls)
        figures.jobs += sum(jobs for _, _, jobs in calls)
        for flood in floods:
            delays = [
                t - flood.start
                for t, f in findings
                if f.subject == flood.who and flood.start <= t <= flood.end
            ]
            if delays:
                figures.detected.setdefault(flood.name, []).append(min(delays))
            else:
                figures.missed[flood.name] = figures.missed.get(flood.name, 0) + 1
        for t, f in findings:
            planted = flooders.get(f.subject)
            if planted is None or not planted.start <= t <= planted.end:
                figures.false_positives[f.detector] = figures.false_positives.get(f.detector, 0) + 1
    return figures


def report(figures: Figures) -> str:
    lines = [
        f"{figures.identity_days} identity-days, {figures.calls} submission calls, "
        f"{figures.jobs} jobs",
        f"false positives: {sum(figures.false_positives.values())} "
        f"({figures.false_positives or 'none'})",
    ]
    for name in FLOODS:
        delays = figures.detected.get(name, [])
        total = len(delays) + figures.missed.get(name, 0)
        timing = f", time to detect median {np.median(delays):.1f} s, max {max(delays):.1f} s"
        lines.append(f"{name}: detected {len(delays)}/{total}{timing if delays else ''}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=10, help="seeds 0..N-1")
    parser.add_argument("--days", type=int, default=7)
    args = parser.parse_args()
    print(report(measure(range(args.seeds), AnomalySettings(), args.days)))


if __name__ == "__main__":
    main()
