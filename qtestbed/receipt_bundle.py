"""A result bundle a researcher keeps, and its offline verification against the facility root.

The bundle holds the counts (and, when the job asked for it, the per-shot memory, bound by the
receipt: one changed shot fails verification), the device-signed receipt, the device's
certificate chain and the attestation evidence the receipt names. Verification needs nothing but
the facility's root certificate: it proves the counts came from the device the facility
certified, for this job, circuit and shot count, and shows the firmware, software and
calibration it attested with. Revocations after the fact are not visible offline; the broker
refuses receipts from revoked devices at the time they arrive.

A bundle saved by `qtestbed result --save` also carries `audit_inclusion`: an RFC 6962 proof
that the job's `job.completed` entry (which records device, shots and the digest of these
counts) is in the facility's audit log as of a checkpoint the broker signed
(`attestation/audit_inclusion.py`). It is checked against the facility's audit signing key,
which the researcher pins (`receipt verify --audit-key`, the broker certificate the facility
publishes): without that key it is reported as not checked, never as valid.

The proof also carries the cosignatures of the witnesses that cosigned its checkpoint (none when
it was saved before any witness had: `witnessed: false`; saving the bundle again later fetches a
witnessed proof). With pinned witness keys (`receipt verify --witness-key`) at least
`require_witnesses` of them must have cosigned exactly that checkpoint
(`attestation/checkpoint_witnesses.py`); without, the witnesses are reported as not checked.

`executed_circuit` is the OpenQASM 3 text of the circuit the device ran when it translated the
one submitted, empty when it ran it as submitted; verification checks it against the receipt's
executed-circuit digest. Bundles saved before the field existed leave it out (None), and that
check is skipped for them.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from attestation.audit_inclusion import (
    ExpectedCompletion,
    InclusionProof,
    verify_inclusion_proof,
)
from attestation.checkpoint_witnesses import WitnessCheck, check_cosignatures
from attestation.dsse import Envelope, EnvelopeError, verify_envelope
from attestation.evidence import EVIDENCE_PAYLOAD_TYPE, EvidenceError, decode_claims
from attestation.keys import VerifyKey
from attestation.pki import CertificateError, verify_device_chain
from attestation.receipts import ReceiptError, decode_receipt, verify_receipt
from attestation.shot_memory import ShotMemory

BUNDLE_FORMAT = "qtestbed.result-bundle.v1"


@dataclass(frozen=True, kw_only=True, slots=True)
class ResultBundle:
    job_id: str
    device_id: str
    circuit_digest: str
    shots: int
    counts: Mapping[str, int]
    receipt: bytes
    device_certificate_chain: bytes
    evidence: bytes = b""
    audit_inclusion: InclusionProof | None = None
    executed_circuit: bytes | None = None
    memory: ShotMemory | None = None

    def to_json(self) -> str:
        body = {
            "format": BUNDLE_FORMAT,
            "job_id": self.job_id,
            "device_id": self.device_id,
            "circuit_digest": self.circuit_digest,
            "shots": self.shots,
            "counts": dict(sorted(self.counts.items())),
            "receipt": base64.b64encode(self.receipt).decode(),
            "device_certificate_chain": self.device_certificate_chain.decode(),
            "evidence": base64.b64encode(self.evidence).decode(),
        }
        if self.audit_inclusion is not None:
            body["audit_inclusion"] = self.audit_inclusion.to_dict()
        if self.executed_circuit is not None:
            body["executed_circuit"] = self.executed_circuit.decode("utf-8")
        if self.memory is not None:
            body["memory"] = {
                "width": self.memory.width,
                "packed": base64.b64encode(self.memory.packed).decode(),
            }
        return json.dumps(body, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ResultBundle:
        try:
            raw = json.loads(text)
            if raw.get("format") != BUNDLE_FORMAT:
                raise ValueError(f"not a {BUNDLE_FORMAT} file")
            return cls(
                job_id=str(raw["job_id"]),
                device_id=str(raw["device_id"]),
                circuit_digest=str(raw["circuit_digest"]),
                shots=int(raw["shots"]),
                counts={str(k): int(v) for k, v in raw["counts"].items()},
                receipt=base64.b64decode(raw["receipt"], validate=True),
                device_certificate_chain=str(raw["device_certificate_chain"]).encode(),
                evidence=base64.b64decode(raw.get("evidence", ""), validate=True),
                audit_inclusion=InclusionProof.from_dict(raw["audit_inclusion"])
                if "audit_inclusion" in raw
                else None,
                executed_circuit=str(raw["executed_circuit"]).encode("utf-8")
                if "executed_circuit" in raw
                else None,
                memory=_memory_from(raw["memory"]) if "memory" in raw else None,
            )
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise ValueError(f"result bundle is malformed: {exc}") from exc


def _memory_from(raw: Mapping[str, Any]) -> ShotMemory:
    return ShotMemory(int(raw["width"]), base64.b64decode(raw["packed"], validate=True))


@dataclass(kw_only=True, slots=True)
class BundleVerdict:
    problems: list[str] = field(default_factory=list)
    measurements: dict[str, Any] = field(default_factory=dict)
    # "verified", "not checked" (no audit key given) or "absent" (the bundle carries no proof).
    audit_inclusion: str = "not checked"
    # "not checked" (no witness key given), "absent" (no proof), "witnessed" (enough pinned
    # witnesses cosigned the proof's checkpoint) or "failed".
    witnesses: str = "not checked"
    witness_key_ids: list[str] = field(default_factory=list)  # the pinned ones that cosigned

    @property
    def valid(self) -> bool:
        return not self.problems


def verify_bundle(
    bundle: ResultBundle,
    ca_pem: bytes,
    *,
    circuit: bytes | None = None,
    now: dt.datetime | None = None,
    audit_key: VerifyKey | None = None,
    witness_keys: Sequence[VerifyKey] = (),
    require_witnesses: int = 1,
) -> BundleVerdict:
    """Every problem with the bundle, checked offline; an empty list means it holds.

    With `audit_key` (the facility's pinned audit signing key) the bundle must also carry an
    inclusion proof of its job.completed entry that verifies under that key; with
    `witness_keys` (pinned too, and only together with `audit_key`) at least
    `require_witnesses` of them must have cosigned that proof's checkpoint.
    """
    if witness_keys and audit_key is None:
        raise ValueError("witness keys vouch for the audit checkpoint: give the audit key too")
    if witness_keys and not 1 <= require_witnesses <= len({k.key_id for k in witness_keys}):
        raise ValueError(
            f"cannot require {require_witnesses} witnesses of {len(witness_keys)} pinned keys"
        )
    verdict = BundleVerdict()
    if audit_key is not None:
        _check_audit_inclusion(bundle, audit_key, verdict)
        if witness_keys:
            _check_witnesses(bundle, audit_key, witness_keys, require_witnesses, verdict)
    try:
        device = verify_device_chain(
            bundle.device_certificate_chain,
            ca_pem,
            now=now or dt.datetime.now(dt.UTC),
            revoked_serials=frozenset(),
        )
    except CertificateError as exc:
        verdict.problems.append(f"device certificate chain rejected ({exc.code.value}): {exc}")
        return verdict
    if device.device_id != bundle.device_id:
        verdict.problems.append(
            f"certificate is for {device.device_id!r}, bundle claims {bundle.device_id!r}"
        )
    if circuit is not None and hashlib.sha256(circuit).hexdigest() != bundle.circuit_digest:
        verdict.problems.append("the circuit file given is not the circuit this job ran")
    verdict.problems += verify_receipt(
        bundle.receipt,
        device.key,
        job_id=bundle.job_id,
        circuit_digest=bundle.circuit_digest,
        shots=bundle.shots,
        counts=bundle.counts,
        dispatch_nonce=None,
        executed_circuit=bundle.executed_circuit,
        memory=bundle.memory,
    )
    _check_receipt_device(bundle, verdict)
    _check_evidence(bundle, device.key, verdict)
    return verdict


def _check_receipt_device(bundle: ResultBundle, verdict: BundleVerdict) -> None:
    try:
        claims = decode_receipt(Envelope.from_json(bundle.receipt))
    except (EnvelopeError, ReceiptError) as exc:
        verdict.problems.append(f"receipt unreadable: {exc}")
        return
    if claims.device_id != bundle.device_id:
        verdict.problems.append(f"receipt was signed for device {claims.device_id!r}")


def _check_evidence(bundle: ResultBundle, key: Any, verdict: BundleVerdict) -> None:
    if not bundle.evidence:
        verdict.problems.append("bundle carries no attestation evidence to tie the receipt to")
        return
    try:
        envelope = Envelope.from_json(bundle.evidence)
        receipt = decode_receipt(Envelope.from_json(bundle.receipt))
    except (EnvelopeError, ReceiptError) as exc:
        verdict.problems.append(f"evidence unreadable: {exc}")
        return
    if envelope.digest() != receipt.evidence_digest:
        verdict.problems.append("evidence is not the evidence the receipt names")
    if envelope.payload_type != EVIDENCE_PAYLOAD_TYPE or not verify_envelope(envelope, key):
        verdict.problems.append("evidence is not signed by the device key")
        return
    try:
        claims = decode_claims(envelope.payload)
    except EvidenceError as exc:
        verdict.problems.append(f"evidence claims unreadable: {exc}")
        return
    if claims.device_id != bundle.device_id:
        verdict.problems.append(f"evidence is from device {claims.device_id!r}")
    verdict.measurements = claims.measurements.as_dict()


def _check_audit_inclusion(bundle: ResultBundle, key: VerifyKey, verdict: BundleVerdict) -> None:
    proof = bundle.audit_inclusion
    if proof is None:
        verdict.audit_inclusion = "absent"
        verdict.problems.append(
            "the bundle carries no audit inclusion proof: save it again with `qtestbed result "
            "--save` from a broker that provides one"
        )
        return
    expected = ExpectedCompletion(
        job_id=bundle.job_id, device_id=bundle.device_id, shots=bundle.shots, counts=bundle.counts
    )
    found = verify_inclusion_proof(proof, key, expected)
    verdict.problems.extend(f"audit inclusion proof: {p}" for p in found)
    verdict.audit_inclusion = "verified" if not found else "failed"


def _check_witnesses(
    bundle: ResultBundle,
    audit_key: VerifyKey,
    pinned: Sequence[VerifyKey],
    required: int,
    verdict: BundleVerdict,
) -> None:
    proof = bundle.audit_inclusion
    if proof is None:
        verdict.witnesses = "absent"
        return  # _check_audit_inclusion has said so
    check = check_cosignatures(proof.checkpoint, audit_key, proof.cosignatures, pinned)
    verdict.problems.extend(f"audit witnesses: {p}" for p in check.problems)
    verdict.witness_key_ids = sorted(check.witnesses)
    if len(check.witnesses) < required:
        verdict.problems.append(f"audit witnesses: {_too_few(proof.witnessed, check, required)}")
    ok = not check.problems and len(check.witnesses) >= required
    verdict.witnesses = "witnessed" if ok else "failed"


def _too_few(carried: bool, check: WitnessCheck, required: int) -> str:
    if not carried:
        return (
            "not witnessed by any pinned witness: the bundle's checkpoint carries no "
            "cosignature (saved before a witness cosigned it); save it again with "
            "`qtestbed result --save` once a witness has"
        )
    if not check.witnesses:
        return (
            f"not witnessed by any pinned witness ({check.unpinned} cosignature(s) by keys not "
            "pinned)"
        )
    return f"witnessed by {len(check.witnesses)} pinned witness(es), {required} required"
