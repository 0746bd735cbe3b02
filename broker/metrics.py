"""Prometheus metrics on the broker's own registry (never the global one, so tests stay apart).

Labels are bounded: device ids come from the facility registry, states/outcomes/reasons/rules
from enums. Job ids and nonces never become labels. They are served only to the scraper
identity, over mutual TLS (`broker.scrape`): there is no plain HTTP endpoint.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 14400)
_EXEC_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 1800)


class BrokerMetrics:
    """Every metric the broker exports, created once per broker."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.jobs = Counter(
            "qtestbed_jobs", "Jobs entering each state, by device.", ["device", "state"], registry=r
        )
        self.job_outcomes = Counter(
            "qtestbed_job_outcomes",
            "Jobs that ended, by device, project, device tier and outcome "
            "(completed, failed, cancelled, denied).",
            ["device", "project", "tier", "outcome"],
            registry=r,
        )
        self.shots = Counter(
            "qtestbed_shots",
            "Shots of jobs that ended, by device, project, device tier and outcome.",
            ["device", "project", "tier", "outcome"],
            registry=r,
        )
        self.busy = Counter(
            "qtestbed_device_busy_seconds",
            "Time devices spent holding a job (dispatch to result or failure).",
            ["device"],
            registry=r,
        )
        self.utilization = Gauge(
            "qtestbed_device_utilization_ratio",
            "Share of the last utilization window (default 300 s) the device was busy.",
            ["device"],
            registry=r,
        )
        self.heartbeats = Counter(
            "qtestbed_driver_heartbeats",
            "Heartbeats received from driver agents, by device.",
            ["device"],
            registry=r,
        )
        self.anomalies = Counter(
            "qtestbed_anomalies",
            "Anomalies raised, by detector and device (empty for principal and facility ones).",
            ["detector", "device"],
            registry=r,
        )
        self.canary_fidelity = Gauge(
            "qtestbed_canary_fidelity_ratio",
            "Hellinger fidelity of the latest canary circuit's counts to its ideal distribution.",
            ["device"],
            registry=r,
        )
        self.canary_runs = Counter(
            "qtestbed_canary_runs",
            "Canary circuits run by the broker on each device, by outcome (ok, low, failed).",
            ["device", "outcome"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "qtestbed_queue_depth", "Jobs waiting in each device's queue.", ["device"], registry=r
        )
        self.queue_wait = Histogram(
            "qtestbed_queue_wait_seconds",
            "Time from submission to dispatch.",
            ["device"],
            buckets=_WAIT_BUCKETS,
            registry=r,
        )
        self.execution = Histogram(
            "qtestbed_execution_seconds",
            "Execution time reported by the device for completed jobs.",
            ["device"],
            buckets=_EXEC_BUCKETS,
            registry=r,
        )
        self.attestations = Counter(
            "qtestbed_attestation_verifications",
            "Evidence appraisals by outcome and first reason code.",
            ["device", "outcome", "reason"],
            registry=r,
        )
        self.receipts = Counter(
            "qtestbed_receipt_verifications",
            "Result receipts checked before storing, by outcome.",
            ["device", "outcome"],
            registry=r,
        )
        self.denials = Counter(
            "qtestbed_clearance_denials",
            "Jobs refused by clearance, by rule and enforcement point (submit or dispatch).",
            ["rule", "stage"],
            registry=r,
        )
        self.rejections = Counter(
            "qtestbed_submissions_rejected",
            "Submissions refused before storing, by the field that was wrong.",
            ["field"],
            registry=r,
        )
        self.decode_refusals = Counter(
            "qtestbed_decode_refusals",
            "Circuit decodes refused before they started, by reason (principal_share).",
            ["reason"],
            registry=r,
        )
        self.drivers = Gauge(
            "qtestbed_driver_connections",
            "Driver agents connected and heartbeating, by device.",
            ["device"],
            registry=r,
        )
        self.lease_expiries = Counter(
            "qtestbed_lease_requeues",
            "Leases given back to the queue (driver vanished, lease expired, bad receipt).",
            ["device", "cause"],
            registry=r,
        )

        self.appraisal_latency = Histogram(
            "qtestbed_attestation_appraisal_seconds",
            "Time to appraise one piece of evidence (chain, signature, nonce, measurements).",
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1),
            registry=r,
        )
        self.quota_rejections = Counter(
            "qtestbed_quota_rejections",
            "Submissions refused because a quota was reached, by scope and limit.",
            ["scope", "limit"],
            registry=r,
        )
        self.access_changes = Counter(
            "qtestbed_access_changes",
            "Operator changes to principals, projects and device operations, by record kind.",
            ["kind"],
            registry=r,
        )
        self.device_states = Gauge(
            "qtestbed_devices",
            "Registered devices by security status and whether a connection is attested now.",
            ["status", "attested"],
            registry=r,
        )
        self.quarantines = Counter(
            "qtestbed_device_quarantines",
            "Devices quarantined after an authenticated attestation failure.",
            ["device"],
            registry=r,
        )
        self.revocations = Counter(
            "qtestbed_device_revocations", "Device certificates revoked.", ["device"], registry=r
        )
        self.nonce_replays = Counter(
            "qtestbed_nonce_replays",
            "Evidence answering a nonce that had already been used.",
            ["device"],
            registry=r,
        )
        self.export_crossings = Counter(
            "qtestbed_export_class_crossings",
            "A device's export class changed with a new attested calibration.",
            ["device", "from_class", "to_class"],
            registry=r,
        )
        self.policy_reload_failures = Counter(
            "qtestbed_policy_reload_failures",
            "Policy reloads refused because the new policies did not validate.",
            registry=r,
        )
        self.front_door_refusals = Counter(
            "qtestbed_front_door_refusals",
            "Connections and calls refused before any service ran, by reason (bad_chain, "
            "expired, not_yet_valid, no_certificate, wrong_issuer, wrong_usage, no_principal, "
            "revoked, unknown_principal, role_required, tls_other; at /metrics also busy and "
            "deadline; at the plaintext health port health_busy).",
            ["reason"],
            registry=r,
        )
        self.stream_refusals = Counter(
            "qtestbed_stream_refusals",
            "Server streams (WatchJob, StreamAudit) refused at the edge, by reason "
            "(principal_cap: the principal already holds [calls] streams_per_principal).",
            ["reason"],
            registry=r,
        )
        self.streams_ended = Counter(
            "qtestbed_streams_ended",
            "Open server streams ended because a new call would now be refused, by reason "
            "(revoked, unknown_principal, role_required, not_found: the watched job is no "
            "longer the caller's to see).",
            ["reason"],
            registry=r,
        )
        self.concurrent_rpc_refusals = Counter(
            "qtestbed_concurrent_rpc_refusals",
            "Calls refused because the broker was serving [calls] max_concurrent_rpcs.",
            registry=r,
        )
        self.admission_refusals = Counter(
            "qtestbed_admission_refusals",
            "Submissions refused at admission, by reason (principal_rate, facility_rate, "
            "overload); each carries a retry delay.",
            ["reason"],
            registry=r,
        )
        self.store_available = Gauge(
            "qtestbed_store_available",
            "1 while the store (database) answers, 0 during an outage.",
            registry=r,
        )
        self.store_outages = Counter(
            "qtestbed_store_outages",
            "Store outages begun: the database stopped answering (each also logged once).",
            registry=r,
        )
        self.unavailable_refusals = Counter(
            "qtestbed_unavailable_refusals",
            "Calls answered UNAVAILABLE with retry advice, by reason (store_unavailable: the "
            "database was not answering).",
            ["reason"],
            registry=r,
        )
        self.access_refusals = Counter(
            "qtestbed_access_refusals",
            "Separation-of-duties refusals by rule (access.self-edit, access.elevation, "
            "access.own-request, access.decider-role, access.break-glass, ...).",
            ["rule"],
            registry=r,
        )
        self.link_refusals = Counter(
            "qtestbed_link_refusals",
            "Driver-link handshakes and messages refused, by reason (unknown_key, "
            "malformed_frame, wrong_key, route_taken, hello_rate, too_many_connections, "
            "hello_first, lease_not_held, duplicate_result, wrong_job, unsolicited_evidence, "
            "unknown_device).",
            ["reason"],
            registry=r,
        )
        self.checkpoints = Counter(
            "qtestbed_audit_checkpoints", "Signed audit-log checkpoints written.", registry=r
        )
        self.cosignatures = Counter(
            "qtestbed_audit_cosignatures",
            "Witness cosignatures offered, by outcome (accepted, duplicate, unknown_witness, "
            "bad_signature, wrong_log, no_such_checkpoint, root_mismatch: a witness holds a "
            "different head of a size this broker signed, i.e. a fork).",
            ["outcome"],
            registry=r,
        )
