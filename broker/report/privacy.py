"""Small-count protection: no published row or cell may single out an individual.

Two rules, applied in this order:

1. Row merging. A group used by fewer than `min_count` distinct principals is merged into one
   row, "other". If "other" then still holds fewer than `min_count` principals, the smallest
   remaining group is merged into it as well, until it holds enough or nothing is left.
   Merged rows are unions of job sets, so a job counts once in "other" even when its principal
   sits in several merged groups.
2. Cell suppression. A count from 1 to `min_count - 1` is not shown ("<5"); zero is shown.
   Then complementary suppression: where a published total would let a reader subtract their
   way back to a hidden cell (a row's jobs minus its shown outcomes; a column's facility total
   minus its shown rows, for tables whose rows split the jobs), one more cell is hidden, the
   smallest, until no relation has exactly one hidden cell.

The facility-wide totals stay exact; a table with a single row therefore cannot hide anything
from them, which the report says.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from broker.report.model import OTHER


@dataclass(frozen=True, kw_only=True, slots=True)
class Group:
    """A group's jobs (indices into the report's job list) and the principals who own them."""

    key: str
    jobs: frozenset[int]
    owners: frozenset[str]
    groups_merged: int = 0


def group_jobs(memberships: Iterable[tuple[int, str, Iterable[str]]]) -> list[Group]:
    """Build groups from (job index, owner, the group keys the job belongs to)."""
    jobs: dict[str, set[int]] = {}
    owners: dict[str, set[str]] = {}
    for index, owner, keys in memberships:
        for key in keys:
            jobs.setdefault(key, set()).add(index)
            owners.setdefault(key, set()).add(owner)
    return [
        Group(key=key, jobs=frozenset(jobs[key]), owners=frozenset(owners[key])) for key in jobs
    ]


def merge_small(groups: Sequence[Group], min_count: int) -> list[Group]:
    """Rule 1: the groups to publish, "other" (if any) last; see the module docstring."""
    kept = [g for g in groups if len(g.owners) >= min_count]
    small = [g for g in groups if len(g.owners) < min_count]
    if not small:
        return _ordered(kept)
    other = _union(small)
    # Smallest first: fewest principals, then fewest jobs, then name, so the result is stable.
    kept.sort(key=lambda g: (len(g.owners), len(g.jobs), g.key))
    while len(other.owners) < min_count and kept:
        other = _union([other, kept.pop(0)])
    return [*_ordered(kept), other]


def _union(groups: Sequence[Group]) -> Group:
    return Group(
        key=OTHER,
        jobs=frozenset().union(*(g.jobs for g in groups)),
        owners=frozenset().union(*(g.owners for g in groups)),
        groups_merged=sum(g.groups_merged or 1 for g in groups),
    )


def _ordered(groups: Iterable[Group]) -> list[Group]:
    return sorted(groups, key=lambda g: (-len(g.jobs), g.key))


@dataclass(frozen=True, kw_only=True, slots=True)
class Relation:
    """`total` equals the sum of `parts` (column names of one row)."""

    total: str
    parts: tuple[str, ...]


def suppress(
    rows: Sequence[Mapping[str, int]],
    min_count: int,
    *,
    row_relations: Sequence[Relation] = (),
    additive_columns: Sequence[str] = (),
) -> list[set[str]]:
    """Rule 2: for each row, the set of columns to hide.

    `row_relations` hold within every row (jobs = completed + failed + ...). Columns in
    `additive_columns` sum over the rows to a total that is published exactly (true when the
    rows split the jobs between them, e.g. by project, but not by jurisdiction).
    """
    hidden = [{c for c, v in row.items() if 0 < v < min_count} for row in rows]
    changed = True
    while changed:
        changed = False
        for row, mask in zip(rows, hidden, strict=True):
            for rel in row_relations:
                cells = (rel.total, *rel.parts)
                if sum(c in mask for c in cells) == 1:
                    # Prefer a part: the total is the most useful figure of the row.
                    open_parts = [c for c in rel.parts if c not in mask]
                    candidates = open_parts or [c for c in cells if c not in mask]
                    if candidates:
                        mask.add(min(candidates, key=lambda c: (row[c], cells.index(c))))
                        changed = True
        if len(rows) < 2:
            continue  # one row equals the published totals: nothing to hide it behind
        for column in additive_columns:
            holders = [i for i, mask in enumerate(hidden) if column in mask]
            if len(holders) == 1:
                others = [i for i, mask in enumerate(hidden) if column not in mask]
                if others:
                    chosen = min(others, key=lambda i: (rows[i][column], i))
                    hidden[chosen].add(column)
                    changed = True
    return hidden
