"""The transparency report's pure parts: small-count protection, medians, grouping, rendering."""

from __future__ import annotations

import csv
import io
import json

import pytest

from broker.audit.model import AuditEvent
from broker.jobs.model import Circuit, Job, JobState
from broker.report.build import Settings, build_report, quarantines, reason_codes
from broker.report.model import OTHER, OUTCOMES, Report
from broker.report.privacy import Group, Relation, group_jobs, merge_small, suppress
from broker.report.reasons import RuleReasons
from broker.report.render_csv import render_csv
from broker.report.render_json import report_to_dict
from broker.report.render_md import duration, render_markdown, text
from broker.report.source import (
    ORDER_SLACK_SECONDS,
    Facts,
    History,
    JobFact,
    PrincipalFacts,
    read_jobs,
)
from broker.report.stats import median, queue_wait
from qtestbed.shared.circuits import CircuitFormat

ROW = (Relation(total="jobs", parts=OUTCOMES),)
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def _group(key: str, owners: int, jobs: int, *, start: int = 0) -> Group:
    return Group(
        key=key,
        jobs=frozenset(range(start, start + jobs)),
        owners=frozenset(f"{key}-{i}" for i in range(owners)),
    )


# ---------------------------------------------------------------- merging small groups


def test_groups_with_enough_principals_stay_and_the_rest_merge_into_other() -> None:
    groups = [_group("big", 7, 30), _group("mid", 5, 10, start=30), _group("a", 3, 4, start=40)]
    groups += [_group("b", 2, 2, start=50)]
    merged = merge_small(groups, 5)
    assert [(g.key, len(g.owners), len(g.jobs), g.groups_merged) for g in merged] == [
        ("big", 7, 30, 0),
        ("mid", 5, 10, 0),
        (OTHER, 5, 6, 2),
    ]


def test_other_takes_in_the_smallest_group_until_it_has_enough_principals() -> None:
    groups = [_group("big", 9, 30), _group("mid", 6, 12, start=30), _group("tiny", 1, 3, start=50)]
    merged = merge_small(groups, 5)
    # "tiny" alone would single out its one principal: "mid" (the smaller kept group) joins it.
    assert [(g.key, len(g.owners), g.groups_merged) for g in merged] == [
        ("big", 9, 0),
        (OTHER, 7, 2),
    ]


def test_everything_merges_when_the_facility_is_too_small() -> None:
    merged = merge_small([_group("x", 2, 3), _group("y", 2, 4, start=3)], 5)
    assert [(g.key, len(g.owners), len(g.jobs), g.groups_merged) for g in merged] == [
        (OTHER, 4, 7, 2)
    ]


def test_min_count_one_merges_nothing() -> None:
    groups = [_group("x", 1, 1), _group("y", 1, 4, start=1)]
    assert [g.key for g in merge_small(groups, 1)] == ["y", "x"]  # most jobs first


def test_overlapping_groups_count_a_job_once_in_other() -> None:
    # One principal in two jurisdictions: their job belongs to both groups.
    memberships = [(0, "p", ("DE", "FR")), (1, "t", ("FR",)), (2, "u", ("DE",))]
    memberships += [(3, "q", ("US",)), (4, "r", ("US",)), (5, "s", ("US",))]
    merged = merge_small(group_jobs(memberships), 3)
    assert [g.key for g in merged] == ["US", OTHER]
    other = merged[1]
    assert other.jobs == frozenset({0, 1, 2})  # 3 jobs, not DE's 2 plus FR's 2
    assert other.owners == frozenset({"p", "t", "u"})
    assert other.groups_merged == 2


# ---------------------------------------------------------------- suppressing small cells


def _row(jobs: int, completed: int, failed: int = 0, cancelled: int = 0, denied: int = 0,
         waiting: int = 0) -> dict[str, int]:  # fmt: skip
    return {
        "jobs": jobs,
        "completed": completed,
        "failed": failed,
        "cancelled": cancelled,
        "denied": denied,
        "waiting": waiting,
    }


def test_counts_below_min_count_are_hidden_and_zero_is_shown() -> None:
    hidden = suppress([{"jobs": 4, "shots": 0, "completed": 5}], 5)
    assert hidden == [{"jobs"}]


def test_a_hidden_outcome_cannot_be_recovered_from_the_row_total() -> None:
    # jobs 40 = 37 + 3: showing the other outcomes would give away failed = 3.
    hidden = suppress([_row(40, 37, failed=3)], 5, row_relations=ROW)
    assert hidden == [{"failed", "cancelled"}]  # the smallest other outcome (a zero) goes too


def test_a_hidden_cell_cannot_be_recovered_from_the_column_total() -> None:
    rows = [_row(40, 40), _row(30, 27, cancelled=3), _row(20, 20)]
    hidden = suppress(rows, 5, row_relations=ROW, additive_columns=("jobs", *OUTCOMES))
    # Row 1's cancelled (3) is primary; then the row needs a second hidden outcome, and the
    # cancelled column needs a second hidden row, which in turn needs a second hidden outcome.
    for mask in hidden:
        assert len(mask & set(OUTCOMES)) in (0, 2, 3, 4, 5)
    columns = {c: sum(c in mask for mask in hidden) for c in OUTCOMES}
    assert all(n != 1 for n in columns.values())
    assert "cancelled" in hidden[1]


def test_no_relation_is_left_with_exactly_one_hidden_cell() -> None:
    rows = [_row(12, 9, failed=2, waiting=1), _row(7, 7), _row(31, 26, cancelled=4, denied=1)]
    hidden = suppress(rows, 5, row_relations=ROW, additive_columns=("jobs", *OUTCOMES))
    for row, mask in zip(rows, hidden, strict=True):
        assert sum(c in mask for c in ("jobs", *OUTCOMES)) != 1
        assert all(c in mask for c, v in row.items() if 0 < v < 5)
    for column in ("jobs", *OUTCOMES):
        assert sum(column in mask for mask in hidden) != 1


def test_min_count_one_hides_nothing() -> None:
    rows = [_row(3, 1, failed=1, waiting=1), _row(1, 0, denied=1)]
    assert suppress(rows, 1, row_relations=ROW, additive_columns=OUTCOMES) == [set(), set()]


def test_a_single_row_gets_no_column_suppression() -> None:
    # Nothing to hide it behind: the row equals the published totals.
    assert suppress([{"jobs": 3}], 5, additive_columns=("jobs",)) == [{"jobs"}]


# ---------------------------------------------------------------- medians and waits


@pytest.mark.parametrize(
    ("values", "expected"),
    [([], None), ([4.0], 4.0), ([9.0, 1.0, 5.0], 5.0), ([1.0, 2.0, 10.0, 4.0], 3.0)],
)
def test_median(values: list[float], expected: float | None) -> None:
    assert median(values) == expected


def test_queue_wait_uses_the_first_dispatch() -> None:
    assert queue_wait(created_at=10, dispatched_at=15, attempts=1, first_dispatch_at=15.2) == 5
    # Re-dispatched after a lease expiry: the table holds the second dispatch (at 100).
    assert queue_wait(created_at=10, dispatched_at=100, attempts=2, first_dispatch_at=15) == 5
    assert queue_wait(created_at=10, dispatched_at=100, attempts=2, first_dispatch_at=None) == 90
    assert queue_wait(created_at=10, dispatched_at=None, attempts=0, first_dispatch_at=None) is None
    assert queue_wait(created_at=10, dispatched_at=9, attempts=1, first_dispatch_at=None) == 0


# ---------------------------------------------------------------- audit details


def test_reason_codes_take_the_code_of_each_reason_once() -> None:
    assert reason_codes(["NONCE_STALE: too old", "MEASUREMENT_MISMATCH: fw", "NONCE_STALE: x"]) == [
        "NONCE_STALE",
        "MEASUREMENT_MISMATCH",
    ]
    assert reason_codes(["UNKNOWN_DEVICE"]) == ["UNKNOWN_DEVICE"]
    assert reason_codes(None) == ["(none given)"]
    assert reason_codes([]) == ["(none given)"]


def _event(kind: str, subject: str, at: float, **detail: object) -> AuditEvent:
    return AuditEvent(kind=kind, actor="broker", subject=subject, at=at, detail=detail)


def _facts(jobs: list[JobFact], **kw: object) -> Facts:
    facts = Facts(since=T0, until=T0 + 86_400, jobs=jobs, principals_now={}, tiers_now={})
    for key, value in kw.items():
        setattr(facts, key, value)
    return facts


def test_quarantines_pair_start_and_end_within_and_around_the_period() -> None:
    day = 86_400.0
    facts = _facts(
        [],
        status_events=[
            _event("device.quarantined", "old", T0 - 3 * day, reason="a"),
            _event("device.released", "old", T0 - 2 * day, **{"from": "QUARANTINED"}),
            _event("device.quarantined", "d1", T0 - 100, reason="attestation failed: X"),
            _event("device.released", "d1", T0 + 500, **{"from": "QUARANTINED"}),
            _event("device.quarantined", "d2", T0 + 1000, reason="b"),
            _event("device.revoked", "d2", T0 + 1600, reason="key exposed"),
            _event("device.quarantined", "d3", T0 + 2000, reason="c"),
        ],
    )
    found = [(q.device, q.outcome, q.duration_seconds) for q in quarantines(facts)]
    assert found == [("d1", "released", 600), ("d2", "revoked", 600), ("d3", "ongoing", None)]


# ---------------------------------------------------------------- the whole build


def _job(n: int, owner: str, state: str, *, device: str = "dev", project: str = "p",
         created: float = T0 + 10, dispatched: float | None = None) -> JobFact:  # fmt: skip
    return JobFact(
        job_id=f"job-{n}",
        owner=owner,
        device_id=device,
        project=project,
        state=state,
        shots=10,
        created_at=created,
        dispatched_at=dispatched,
        attempts=1 if dispatched is not None else 0,
    )


def _report(facts: Facts, k: int) -> Report:
    settings = Settings(facility="Test", store="sqlite", min_count=k, generated_at=T0 + 90_000)
    return build_report(facts, RuleReasons({}), settings)


def test_jobs_are_grouped_by_attributes_at_submission() -> None:
    history: History[PrincipalFacts] = History()
    history.record("ann", T0, PrincipalFacts(affiliation="Uni A", jurisdictions=frozenset({"US"})))
    history.record("ann", T0 + 50, PrincipalFacts(affiliation="Uni B", jurisdictions=frozenset()))
    tiers: History[str] = History()
    tiers.record("dev", T0, "open")
    tiers.record("dev", T0 + 50, "restricted")
    facts = _facts(
        [_job(1, "ann", "COMPLETED", created=T0 + 10), _job(2, "ann", "QUEUED", created=T0 + 60)],
        principal_history=history,
        tier_history=tiers,
    )
    facts.principals_now = {"ann": PrincipalFacts(affiliation="Now", jurisdictions=frozenset())}
    report = _report(facts, 1)
    tables = {t.dimension: t for t in report.served}
    assert [r.group for r in tables["affiliation"].rows] == ["Uni A", "Uni B"]
    assert [r.group for r in tables["device_tier"].rows] == ["open", "restricted"]
    assert [r.group for r in tables["jurisdiction"].rows] == ["(not recorded)", "US"]
    assert report.notes == ()


def test_current_records_are_used_when_the_log_has_no_history() -> None:
    facts = _facts([_job(1, "ann", "COMPLETED"), _job(2, "zed", "COMPLETED")])
    facts.principals_now = {"ann": PrincipalFacts(affiliation="Now", jurisdictions=frozenset())}
    facts.tiers_now = {"dev": "open"}
    report = _report(facts, 1)
    tables = {t.dimension: t for t in report.served}
    assert sorted(r.group for r in tables["affiliation"].rows) == ["(unknown principal)", "Now"]
    assert any("current affiliation" in note for note in report.notes)
    assert any("no principal record" in note for note in report.notes)


def _workload() -> Facts:
    jobs = [
        _job(i, f"u{i % 6}", "COMPLETED", dispatched=T0 + 10 + i, project="big") for i in range(11)
    ]
    jobs.append(_job(11, "u0", "FAILED", dispatched=T0 + 30, project="big"))
    jobs.append(_job(12, "solo", "DENIED", project="small"))
    tiers: History[str] = History()
    tiers.record("dev", T0 - 10, "open")
    return _facts(
        jobs,
        tier_history=tiers,
        period_events=[
            _event("clearance.denied", "", T0 + 1, stage="submit", rule="p/project"),
            _event("clearance.denied", "job-12", T0 + 2, stage="dispatch", rule="p/project"),
            _event("clearance.denied", "", T0 + 3, stage="submit", rule="p/project"),
            _event("quota.exceeded", "", T0 + 4, scope="principal", limit="active_jobs", max=1),
            _event("attestation.failed", "dev", T0 + 5, reasons=["NONCE_STALE: old"]),
            _event("attestation.failed", "$(evil)|x", T0 + 6, reasons=["UNKNOWN_DEVICE"]),
            _event("link.refused", "ghost", T0 + 6, reason="unknown_device", count=3),
            _event("link.refused", "dev", T0 + 6, reason="hello_rate", count=9),
            _event("attestation.passed", "dev", T0 + 7, reasons=[]),
            _event("anomaly.raised", "u1", T0 + 8, detector="rate_spike", device=""),
            _event("anomaly.raised", "dev", T0 + 9, detector="drift", device="dev"),
        ],
    )


def test_a_whole_report_at_min_count_one() -> None:
    report = _report(_workload(), 1)
    assert report.totals.jobs == 13
    assert report.totals.by_state["COMPLETED"] == 11
    assert report.totals.by_outcome == {
        "completed": 11,
        "failed": 1,
        "cancelled": 0,
        "denied": 1,
        "waiting": 0,
    }
    projects = {r.group: r for r in next(t for t in report.served if t.dimension == "project").rows}
    assert projects["small"].cell("denied").value == 1
    assert projects["big"].cell("principals").value == 6
    assert [(d.stage, d.rule, d.count) for d in report.denials] == [
        ("submit", "p/project", 2),
        ("dispatch", "p/project", 1),
    ]
    assert report.denials[0].reason == "(this rule is not in the current policy set)"
    # Hellos for unregistered devices: one entry from before they were audited in aggregate,
    # and one aggregated `link.refused` entry counting 3.
    assert [(f.device, f.reason_code, f.count) for f in report.failures] == [
        ("(unregistered device)", "UNKNOWN_DEVICE", 4),
        ("dev", "NONCE_STALE", 1),
    ]
    assert [(a.detector, a.device, a.count) for a in report.anomalies] == [
        ("drift", "dev", 1),
        ("rate_spike", "", 1),
    ]
    (wait,) = report.queue_wait
    assert (wait.group, wait.jobs.value) == ("open", 12)
    assert wait.median_seconds == median([float(i) for i in range(11)] + [20.0])


def test_a_whole_report_at_the_default_min_count() -> None:
    report = _report(_workload(), 5)
    projects = next(t for t in report.served if t.dimension == "project").rows
    # "small" has one principal: merged, and "other" then takes in "big" as well.
    assert [r.group for r in projects] == [OTHER]
    (row,) = projects
    assert row.cell("jobs").value == 13
    assert row.cell("failed").suppressed
    assert row.cell("denied").suppressed
    assert row.cell("completed").value == 11
    # Exact totals whatever is hidden.
    assert report.totals.by_outcome["failed"] == 1


def test_renderers_agree_and_never_print_a_hidden_count() -> None:
    report = _report(_workload(), 5)
    as_json = report_to_dict(report)
    (row,) = as_json["served"]["project"]["rows"]
    assert row["failed"] == {"value": None, "suppressed": True, "why": "below_min_count"}
    assert row["jobs"] == {"value": 13, "suppressed": False, "why": None}
    assert json.loads(json.dumps(as_json)) == as_json
    md = render_markdown(report)
    assert "| other (2 groups) | 7 | 13 | 130 | 11 | <5 | 0 | <5 | 0 |" in md
    assert "| 13 | 130 | 7 | 11 | 1 | 0 | 1 | 0 |" in md  # the exact totals
    table = list(csv.reader(io.StringIO(render_csv(report))))
    assert table[0] == ["section", "group", "key", "value"]
    assert ["served.project", "other", "failed", "<5"] in table
    assert ["totals", "outcome", "failed", "1"] in table


def test_stored_text_is_inert_in_markdown_and_csv() -> None:
    assert text("a|b\n<script>`x`") == r"a\|b \<script\>\`x\`"
    facts = _workload()
    facts.jobs = [_job(1, "u", "COMPLETED", project="=cmd|' /C calc'!A0")]
    report = _report(facts, 1)
    rows = list(csv.reader(io.StringIO(render_csv(report))))
    assert ["served.project", "'=cmd|' /C calc'!A0", "jobs", "1"] in rows
    assert "$(evil)" not in render_markdown(report)


def test_durations_read_at_a_glance() -> None:
    assert [duration(s) for s in (0.42, 12.4, 185, 7_800, 273_600)] == [
        "0.42 s",
        "12 s",
        "3 min 5 s",
        "2 h 10 min",
        "3 d 4 h",
    ]


def test_a_count_hidden_to_protect_another_is_not_called_small() -> None:
    # Two affiliations; B's one completed job is small, so A's completed (11) must go as well.
    jobs = [_job(i, f"a{i % 5}", "COMPLETED") for i in range(11)]
    jobs += [_job(11 + i, f"b{i}", "COMPLETED" if i == 0 else "QUEUED") for i in range(5)]
    facts = _facts(jobs)
    facts.principals_now = {
        **{f"a{i}": PrincipalFacts(affiliation="A", jurisdictions=frozenset()) for i in range(5)},
        **{f"b{i}": PrincipalFacts(affiliation="B", jurisdictions=frozenset()) for i in range(5)},
    }
    report = _report(facts, 5)
    rows = {r.group: r for r in next(t for t in report.served if t.dimension == "affiliation").rows}
    assert rows["B"].cell("completed").why == "below_min_count"
    assert rows["A"].cell("completed").why == "complementary"
    md = render_markdown(report)
    assert "| A | 5 | 11 | 110 | hidden | 0 | 0 | 0 | hidden |" in md
    assert "| B | 5 | 5 | 50 | <5 | 0 | 0 | 0 | <5 |" in md


class _Jobs:
    """list_jobs over jobs created at the given times, in that (seq) order."""

    def __init__(self, created: list[float]) -> None:
        circuit = Circuit(
            format=CircuitFormat.OPENQASM2, payload=b"", digest="", num_qubits=1, depth=1
        )
        self.rows = [
            (seq, Job(job_id=f"j{seq}", owner="o", device_id="d", circuit=circuit, shots=1,
                      state=JobState.QUEUED, created_at=at, updated_at=at))
            for seq, at in enumerate(created, start=1)
        ]  # fmt: skip
        self.pages = 0

    def list_jobs(
        self, *, limit: int = 100, before_seq: int | None = None
    ) -> list[tuple[int, Job]]:
        self.pages += 1
        older = [r for r in self.rows if before_seq is None or r[0] < before_seq]
        return sorted(older, reverse=True)[:limit]


def test_jobs_are_read_newest_first_until_well_before_the_period() -> None:
    long_ago = T0 - 10 * ORDER_SLACK_SECONDS
    # Committed slightly out of created_at order around the period's start, as a slow
    # validation can make them.
    created = [long_ago + i for i in range(50)] + [T0 + 5, T0 - 1, T0 + 2, T0 + 86_400]
    store = _Jobs(created)
    found = read_jobs(store, T0, T0 + 86_400, page=3)
    assert [j.created_at for j in found] == [T0 + 5, T0 + 2]
    assert store.pages == 2  # stopped at the first page ending a whole margin before it


def test_the_access_request_section_counts_steps_and_refusals_without_names() -> None:
    def step(event: str, subject: str, n: int, **detail: object) -> AuditEvent:
        return AuditEvent(kind=event, actor="x", subject=subject, at=T0 + n, detail=detail)

    events = [
        step("access.request.created", "alice", 1, kind="device", value="qpu-secret"),
        step("access.request.granted", "alice", 2, kind="device", value="qpu-secret"),
        step("access.request.expired", "alice", 3, kind="device", value="qpu-secret"),
        step("access.request.created", "bob", 4, kind="tier", value="restricted"),
        step("access.request.approved", "bob", 5, kind="tier", break_glass=True),
        step("access.request.granted", "bob", 6, kind="tier", break_glass=True),
        step("access.request.revoked", "bob", 7, kind="tier"),
        step("access.request.created", "carol", 8, kind="licence", value="EAR-4A906"),
        step("access.request.denied", "carol", 9, kind="licence", value="EAR-4A906"),
        step("access.principal.refused", "olivia", 10, rule="access.self-edit"),
        step("access.decision.refused", "petra", 11, rule="access.own-request"),
        step("access.request.refused", "", 12, rule="access.duplicate", count=4),
    ]
    report = _report(_facts([], period_events=events), 5)
    by_kind = {g.kind: g for g in report.grants}
    assert list(by_kind) == ["tier", "licence", "device"]
    tier, licence, device = by_kind["tier"], by_kind["licence"], by_kind["device"]
    assert (tier.filed, tier.granted, tier.break_glass, tier.revoked) == (1, 1, 1, 1)
    assert (licence.filed, licence.denied, licence.granted) == (1, 1, 0)
    assert (device.granted, device.expired, device.break_glass) == (1, 1, 0)
    assert [(r.rule, r.count) for r in report.separation_refusals] == [
        ("access.duplicate", 4),
        ("access.own-request", 1),
        ("access.self-edit", 1),
    ]
    md = render_markdown(report)
    assert "## 6. Access requests and grants" in md
    assert "| tier | 1 | 1 | 1 | 0 | 1 | 0 |" in md
    assert "Refusals under the separation-of-duties rules: 6." in md
    as_json = report_to_dict(report)
    assert as_json["access_requests"]["separation_refusals"][0] == {
        "rule": "access.duplicate",
        "count": 4,
    }
    table = list(csv.reader(io.StringIO(render_csv(report))))
    assert ["access_requests", "device", "expired", "1"] in table
    for rendered in (md, json.dumps(as_json), render_csv(report)):
        for secret in ("alice", "bob", "carol", "olivia", "petra", "qpu-secret", "EAR-4A906"):
            assert secret not in rendered
