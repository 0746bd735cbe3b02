"""The researcher's client: a blocking SDK over the broker's gRPC API with mutual TLS.

Results can be checked offline: `verify_result` validates the device certificate against the
facility root and the receipt against the result, without asking the broker anything.
"""

from __future__ import annotations

import datetime as dt
import tomllib
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

from attestation.audit_inclusion import InclusionProof
from attestation.shot_memory import ShotMemory, ShotMemoryError
from qtestbed.receipt_bundle import ResultBundle, verify_bundle
from qtestbed.shared.wire import (
    FORMAT_NAMES,
    RULE_ID_METADATA,
    STATUS_DETAILS_METADATA,
    format_to_proto,
)
from qtestbed.v1 import (
    access_pb2_grpc,
    admin_pb2_grpc,
    credentials_pb2_grpc,
    devices_pb2,
    devices_pb2_grpc,
    grants_pb2_grpc,
    jobs_pb2,
    jobs_pb2_grpc,
)


class QtestbedError(Exception):
    """A refusal from the broker: its gRPC status name, its message, any rule id, and the
    seconds to wait before retrying when the broker said (a google.rpc.RetryInfo status detail)."""

    def __init__(
        self,
        code: str,
        message: str,
        rule_id: str = "",
        retry_after_seconds: float | None = None,
    ) -> None:
        retry = f" [retry after {retry_after_seconds:.3g} s]" if retry_after_seconds else ""
        rule = f" [rule {rule_id}]" if rule_id else ""
        super().__init__(f"{code}: {message}{rule}{retry}")
        self.code = code
        self.message = message
        self.rule_id = rule_id
        # From the standard google.rpc.RetryInfo status detail, when the broker gave one.
        self.retry_after_seconds = retry_after_seconds


@dataclass(frozen=True, kw_only=True, slots=True)
class Profile:
    """Where the broker is and who the caller is (a client TOML written by `qtestbed init`)."""

    broker: str
    ca_cert: Path
    cert: Path
    key: Path

    @classmethod
    def load(cls, path: Path) -> Profile:
        raw = tomllib.loads(path.read_text())
        base = path.resolve().parent

        def rel(key: str) -> Path:
            value = Path(str(raw[key]))
            return value if value.is_absolute() else base / value

        return cls(
            broker=str(raw["broker"]), ca_cert=rel("ca_cert"), cert=rel("cert"), key=rel("key")
        )


def detect_format(payload: bytes, filename: str = "") -> str:
    """Guess the circuit format from the file name or its first bytes."""
    if filename.endswith(".qpy") or payload.startswith(b"QISKIT"):
        return "qpy"
    head = payload[:200].decode("utf-8", "replace")
    return "qasm3" if "OPENQASM 3" in head else "qasm2"


def error_from(exc: grpc.RpcError) -> QtestbedError:
    """The QtestbedError a call's failure means: its status code and message, the rule that
    refused it and the RetryInfo delay (for callers that drive a stub of their own, as a load
    generator does)."""
    call = exc  # grpc raises objects that are both RpcError and Call
    code = call.code().name if hasattr(call, "code") else "UNKNOWN"
    details = call.details() if hasattr(call, "details") else str(exc)
    rule = ""
    trailers = call.trailing_metadata() if hasattr(call, "trailing_metadata") else None
    retry: float | None = None
    for key, value in trailers or ():
        if key == RULE_ID_METADATA:
            rule = str(value)
        elif key == STATUS_DETAILS_METADATA and isinstance(value, bytes):
            retry = _retry_delay(value)
    return QtestbedError(code, details or "", rule, retry)


def _retry_delay(serialized: bytes) -> float | None:
    """The RetryInfo delay in a serialized google.rpc.Status, or None when it has none."""
    status = status_pb2.Status()
    try:
        status.ParseFromString(serialized)
    except DecodeError:
        return None
    for detail in status.details:
        info = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            return float(info.retry_delay.ToNanoseconds()) / 1e9
    return None


def submit_request(
    payload: bytes,
    *,
    device_id: str = "",
    shots: int,
    fmt: str | None = None,
    idempotency_key: str | None = None,
    project: str = "",
    priority: jobs_pb2.JobPriority.ValueType = jobs_pb2.JOB_PRIORITY_UNSPECIFIED,
    selector: jobs_pb2.DeviceSelector | None = None,
    session_id: str = "",
    memory: bool = False,
) -> jobs_pb2.SubmitJobRequest:
    """One SubmitJob request; a fresh idempotency key unless given (reuse it to retry)."""
    return jobs_pb2.SubmitJobRequest(
        device_id=device_id,
        priority=priority,
        selector=selector,
        session_id=session_id,
        circuit=jobs_pb2.Circuit(
            format=format_to_proto(FORMAT_NAMES[fmt or detect_format(payload)]), payload=payload
        ),
        shots=shots,
        idempotency_key=idempotency_key or uuid.uuid4().hex,
        project=project,
        memory=memory,
    )


class Client:
    def __init__(self, profile: Profile, *, timeout: float = 30.0) -> None:
        from attestation.keys import load_private_key  # refuses group/world-readable keys

        creds = grpc.ssl_channel_credentials(
            root_certificates=profile.ca_cert.read_bytes(),
            private_key=load_private_key(profile.key).to_pem(),
            certificate_chain=profile.cert.read_bytes(),
        )
        self.profile = profile  # what a copy needs to open its own connection
        self.ca_pem = profile.ca_cert.read_bytes()
        self.timeout = timeout
        self._channel = grpc.secure_channel(profile.broker, creds)
        self._jobs = jobs_pb2_grpc.JobServiceStub(self._channel)
        self._devices = devices_pb2_grpc.DeviceServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def submit(
        self,
        payload: bytes,
        *,
        device_id: str = "",
        shots: int,
        fmt: str | None = None,
        idempotency_key: str | None = None,
        project: str = "",
        priority: jobs_pb2.JobPriority.ValueType = jobs_pb2.JOB_PRIORITY_UNSPECIFIED,
        selector: jobs_pb2.DeviceSelector | None = None,
        session_id: str = "",
        memory: bool = False,
    ) -> jobs_pb2.SubmitJobResponse:
        """Submit a circuit to `device_id`, to a device matching `selector`, or into a session;
        `memory` asks for every shot's outcome in shot order as well as the counts."""
        request = submit_request(
            payload,
            device_id=device_id,
            shots=shots,
            fmt=fmt,
            idempotency_key=idempotency_key,
            project=project,
            priority=priority,
            selector=selector,
            session_id=session_id,
            memory=memory,
        )
        try:
            response: jobs_pb2.SubmitJobResponse = self._jobs.SubmitJob(
                request, timeout=self.timeout
            )
        except grpc.RpcError as exc:
            raise error_from(exc) from None
        return response

    @property
    def channel(self) -> grpc.Channel:
        """The mutual-TLS channel, for stubs of services this class has no shortcut for."""
        return self._channel

    def call(self, method: Any, request: Any) -> Any:
        """Any unary RPC, with refusals raised as QtestbedError (used by the operator CLI)."""
        return self._unary(method, request)

    @property
    def admin(self) -> admin_pb2_grpc.DeviceAdminServiceStub:
        return admin_pb2_grpc.DeviceAdminServiceStub(self._channel)

    @property
    def access(self) -> access_pb2_grpc.AccessAdminServiceStub:
        return access_pb2_grpc.AccessAdminServiceStub(self._channel)

    @property
    def credentials(self) -> credentials_pb2_grpc.CredentialServiceStub:
        return credentials_pb2_grpc.CredentialServiceStub(self._channel)

    @property
    def access_requests(self) -> grants_pb2_grpc.AccessRequestServiceStub:
        return grants_pb2_grpc.AccessRequestServiceStub(self._channel)

    @property
    def audit(self) -> admin_pb2_grpc.AuditServiceStub:
        return admin_pb2_grpc.AuditServiceStub(self._channel)

    def stream(self, method: Any, request: Any, timeout: float | None = None) -> Iterator[Any]:
        try:
            yield from method(request, timeout=timeout)
        except grpc.RpcError as exc:
            raise error_from(exc) from None

    def _unary(self, method: object, request: object) -> object:
        try:
            return method(request, timeout=self.timeout)  # type: ignore[operator]
        except grpc.RpcError as exc:
            raise error_from(exc) from None

    def get_job(self, job_id: str) -> jobs_pb2.Job:
        return self._unary(self._jobs.GetJob, jobs_pb2.GetJobRequest(job_id=job_id))  # type: ignore[return-value]

    def cancel(self, job_id: str, reason: str = "") -> jobs_pb2.Job:
        request = jobs_pb2.CancelJobRequest(job_id=job_id, reason=reason)
        return self._unary(self._jobs.CancelJob, request)  # type: ignore[return-value]

    def list_jobs(self, *, device_id: str = "", page_size: int = 50) -> list[jobs_pb2.Job]:
        request = jobs_pb2.ListJobsRequest(device_id=device_id, page_size=page_size)
        response: jobs_pb2.ListJobsResponse = self._unary(self._jobs.ListJobs, request)  # type: ignore[assignment]
        return list(response.jobs)

    def result(self, job_id: str) -> jobs_pb2.JobResult:
        request = jobs_pb2.GetResultRequest(job_id=job_id)
        return self._unary(self._jobs.GetResult, request)  # type: ignore[return-value]

    def result_proof(self, job_id: str) -> InclusionProof:
        """The inclusion proof of the job's job.completed audit entry in a signed checkpoint,
        with witnesses' cosignatures when the broker has a witnessed checkpoint covering it."""
        request = jobs_pb2.GetResultProofRequest(job_id=job_id)
        proof: jobs_pb2.ResultProof = self._unary(self._jobs.GetResultProof, request)  # type: ignore[assignment]
        return InclusionProof(
            entry=proof.entry,
            leaf_index=proof.leaf_index,
            tree_size=proof.tree_size,
            audit_path=tuple(proof.audit_path),
            checkpoint=proof.checkpoint,
            cosignatures=tuple(proof.cosignatures),
        )

    def submit_many(
        self, requests: Sequence[jobs_pb2.SubmitJobRequest]
    ) -> list[jobs_pb2.SubmitJobResponse]:
        """Several jobs queued as a unit (all or none); build requests with `submit_request`."""
        batch = jobs_pb2.SubmitJobsRequest(jobs=list(requests))
        response: jobs_pb2.SubmitJobsResponse = self._unary(self._jobs.SubmitJobs, batch)  # type: ignore[assignment]
        return list(response.jobs)

    def open_session(
        self, device_id: str, *, project: str = "", max_seconds: float = 0.0
    ) -> jobs_pb2.Session:
        request = jobs_pb2.OpenSessionRequest(
            device_id=device_id, project=project, max_seconds=max_seconds
        )
        return self._unary(self._jobs.OpenSession, request)  # type: ignore[return-value]

    def close_session(self, session_id: str, reason: str = "") -> jobs_pb2.Session:
        request = jobs_pb2.CloseSessionRequest(session_id=session_id, reason=reason)
        return self._unary(self._jobs.CloseSession, request)  # type: ignore[return-value]

    def session(self, session_id: str) -> jobs_pb2.Session:
        request = jobs_pb2.GetSessionRequest(session_id=session_id)
        return self._unary(self._jobs.GetSession, request)  # type: ignore[return-value]

    def sessions(
        self, *, device_id: str = "", include_closed: bool = False
    ) -> list[jobs_pb2.Session]:
        request = jobs_pb2.ListSessionsRequest(device_id=device_id, include_closed=include_closed)
        response: jobs_pb2.ListSessionsResponse = self._unary(self._jobs.ListSessions, request)  # type: ignore[assignment]
        return list(response.sessions)

    def quota(self, project: str = "") -> list[jobs_pb2.QuotaUsage]:
        """The caller's and the project's quotas with what remains: check before submitting."""
        request = jobs_pb2.GetQuotaRequest(project=project)
        response: jobs_pb2.GetQuotaResponse = self._unary(self._jobs.GetQuota, request)  # type: ignore[assignment]
        return list(response.quotas)

    def device(self, device_id: str) -> devices_pb2.Device:
        request = devices_pb2.GetDeviceRequest(device_id=device_id)
        return self._unary(self._devices.GetDevice, request)  # type: ignore[return-value]

    def devices(self) -> Sequence[devices_pb2.Device]:
        response: devices_pb2.ListDevicesResponse = self._unary(  # type: ignore[assignment]
            self._devices.ListDevices, devices_pb2.ListDevicesRequest()
        )
        return list(response.devices)

    def watch(self, job_id: str, *, timeout: float | None = None) -> Iterator[jobs_pb2.Job]:
        """Each state or queue-position change until the job is terminal."""
        stream = self._jobs.WatchJob(jobs_pb2.WatchJobRequest(job_id=job_id), timeout=timeout)
        try:
            for event in stream:
                yield event.job
        except grpc.RpcError as exc:
            raise error_from(exc) from None

    def verify_result(self, result: jobs_pb2.JobResult, job: jobs_pb2.Job) -> list[str]:
        """Problems with the result's receipt, checked offline; an empty list means valid."""
        return verify_result_offline(result, job, self.ca_pem)


def bundle_of(
    result: jobs_pb2.JobResult, job: jobs_pb2.Job, proof: InclusionProof | None = None
) -> ResultBundle:
    """What a researcher keeps: counts, receipt, certificate chain, evidence and the audit
    inclusion proof, for `job`."""
    return ResultBundle(
        job_id=job.job_id,
        device_id=result.device_id,
        circuit_digest=job.circuit_digest,
        shots=job.shots,
        counts=dict(result.counts),
        receipt=result.receipt,
        device_certificate_chain=result.device_certificate,
        evidence=result.evidence,
        audit_inclusion=proof,
        executed_circuit=result.executed_circuit,
        memory=memory_of(result),
    )


def memory_of(result: jobs_pb2.JobResult) -> ShotMemory | None:
    """The result's per-shot memory, None when the job did not ask for it; ShotMemoryError
    when it is malformed."""
    if not result.memory_width:
        if result.memory:
            raise ShotMemoryError("per-shot memory without a width")
        return None
    return ShotMemory(result.memory_width, result.memory)


def verify_result_offline(
    result: jobs_pb2.JobResult, job: jobs_pb2.Job, ca_pem: bytes, now: dt.datetime | None = None
) -> list[str]:
    try:
        bundle = bundle_of(result, job)
    except ShotMemoryError as exc:
        return [f"per-shot memory is malformed: {exc}"]
    return verify_bundle(bundle, ca_pem, now=now).problems
