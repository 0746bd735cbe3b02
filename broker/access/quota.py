"""Quotas: what the store must check with a job insert, and what a researcher sees before
submitting. The limits live on principals and projects; usage is counted by the store."""

from __future__ import annotations

from dataclasses import dataclass

from broker.access.model import DAY_SECONDS, Principal, Quota, QuotaCheck, Usage
from broker.access.registry import AccessRegistry
from broker.store.runner import StoreRunner


@dataclass(frozen=True, kw_only=True, slots=True)
class QuotaStatus:
    """A quota next to its usage, for the researcher to see before submitting."""

    scope: str  # "principal" | "project"
    name: str
    max_active_jobs: int
    max_shots_per_day: int
    usage: Usage


class Quotas:
    def __init__(self, access: AccessRegistry, runner: StoreRunner) -> None:
        self._access = access
        self._runner = runner

    def check(self, owner: Principal, project: str, now: float) -> QuotaCheck | None:
        """What the job insert must count, or None when neither side is limited."""
        found = self._access.project(project)
        project_quota = found.quota if found is not None else Quota()
        if not owner.quota.limited and not project_quota.limited:
            return None
        return QuotaCheck(
            owner=owner.name,
            owner_quota=owner.quota,
            project=project,
            project_quota=project_quota,
            since=now - DAY_SECONDS,
        )

    async def status(self, owner: Principal, project: str, now: float) -> list[QuotaStatus]:
        """The caller's and the project's quotas with current usage, read from the store."""
        scopes: list[tuple[str, str, Quota]] = [("principal", owner.name, owner.quota)]
        found = self._access.project(project)
        if found is not None:
            scopes.append(("project", project, found.quota))
        return [await self._status(scope, name, quota, now) for scope, name, quota in scopes]

    async def _status(self, scope: str, name: str, quota: Quota, now: float) -> QuotaStatus:
        usage = await self._runner.call(
            self._runner.store.job_usage,
            owner=name if scope == "principal" else None,
            project=name if scope == "project" else None,
            since=now - DAY_SECONDS,
        )
        return QuotaStatus(
            scope=scope,
            name=name,
            max_active_jobs=quota.max_active_jobs,
            max_shots_per_day=quota.max_shots_per_day,
            usage=usage,
        )
