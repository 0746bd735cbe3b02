"""Appraisal throughput as a ratio to raw signature verification with the same key, in one run.

    .venv/bin/python bench/bench_appraisal.py [--quick]

For each device key kind (Ed25519, then ECDSA P-256) a root CA and one intermediate CA of the
same kind are made, and a device certificate for the key from the intermediate. Then, in
alternating rounds on one thread:
  verify    the raw `cryptography` call (Ed25519PublicKey.verify, or EllipticCurvePublicKey.verify
            with ECDSA-SHA256) of one evidence envelope's signature over its PAE bytes;
  chain     `verify_device_chain` alone (two certificate signatures plus the path rules);
  appraise  the full `attestation.appraisal.appraise`: chain, registration, DSSE signature,
            claims, nonce consumption, freshness, counter, reference window and measurements.
Each appraisal answers a fresh nonce from a `NonceIssuer`; issuing the nonces and signing the
evidence (the broker's challenge and the device's work) happen in batches outside the timed
region. Every appraisal must affirm; one that does not is an error and the run exits 1.

Every loop stops at a count or a time limit, whichever comes first. Rates are operations per
CPU second of this process (time.process_time), so other load on a shared machine moves them
less than wall-clock rates would; each is the median of the rounds, and the wall-clock median is
printed beside it. Printed: absolute rates, and `RATIO appraise/verify <kind>` (CPU-time rates).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import cryptography
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from attestation.appraisal import AppraisalPolicy, ReferenceValues, appraise
from attestation.dsse import pae
from attestation.evidence import EvidenceClaims, Measurements, make_evidence
from attestation.keys import KeyKind, SigningKey
from attestation.nonces import NonceIssuer
from attestation.pki import (
    cert_to_pem,
    create_ca,
    create_intermediate,
    device_uri,
    fingerprint,
    issue_certificate,
    verify_device_chain,
)

DEVICE = "bench-qpu"
BATCH = 256  # evidence signed ahead of each timed stretch of appraisals
MEASUREMENTS = Measurements(
    firmware="fw-1",
    control_software="ctl-1",
    driver_build="drv-1",
    calibration_digest="c" * 64,
    num_qubits=5,
    two_qubit_error=0.01,
)
REFERENCE = ReferenceValues(
    firmware=frozenset({"fw-1"}),
    control_software=frozenset({"ctl-1"}),
    driver_build=frozenset({"drv-1"}),
    calibration_digest=frozenset({"c" * 64}),
    num_qubits=5,
)
POLICY = AppraisalPolicy()


@dataclass(frozen=True, kw_only=True, slots=True)
class Plan:
    """How much to run; every measurement is bounded by a count and by seconds."""

    rounds: int
    warmup_ops: int
    max_ops: int
    max_seconds: float


FULL = Plan(rounds=7, warmup_ops=200, max_ops=20_000, max_seconds=1.0)
QUICK = Plan(rounds=1, warmup_ops=5, max_ops=100, max_seconds=0.2)


@dataclass(frozen=True, kw_only=True, slots=True)
class Device:
    """One device of one key kind, with the facility side of its registration."""

    kind: KeyKind
    key: SigningKey
    chain: bytes
    anchor: bytes
    fingerprints: frozenset[str]


@dataclass(frozen=True, kw_only=True, slots=True)
class Sample:
    """One bounded loop: how many operations, in how much CPU and wall-clock time."""

    ops: int
    cpu_seconds: float
    wall_seconds: float

    def __add__(self, other: Sample) -> Sample:
        return Sample(
            ops=self.ops + other.ops,
            cpu_seconds=self.cpu_seconds + other.cpu_seconds,
            wall_seconds=self.wall_seconds + other.wall_seconds,
        )

    @property
    def cpu_rate(self) -> float:
        return self.ops / self.cpu_seconds

    @property
    def wall_rate(self) -> float:
        return self.ops / self.wall_seconds


@dataclass(frozen=True, kw_only=True, slots=True)
class Rates:
    verify: list[Sample]
    chain: list[Sample]
    appraise: list[Sample]


def make_device(kind: KeyKind) -> Device:
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    root_key, inter_key, key = (SigningKey.generate(kind) for _ in range(3))
    root = create_ca("bench root", root_key, now=now, days=30, path_length=1)
    inter = create_intermediate(
        "bench intermediate", inter_key, parent_key=root_key, parent_cert=root, now=now, days=30
    )
    cert = issue_certificate(
        ca_key=inter_key,
        ca_cert=inter,
        subject_cn=DEVICE,
        public_key=key.public_key,
        now=now,
        days=30,
        uris=[device_uri(DEVICE)],
    )
    return Device(
        kind=kind,
        key=key,
        chain=cert_to_pem(cert) + cert_to_pem(inter),
        anchor=cert_to_pem(root),
        fingerprints=frozenset({fingerprint(cert)}),
    )


def timed(operation: Callable[[], None], max_ops: int, max_seconds: float) -> Sample:
    """Run `operation` until `max_ops` operations or `max_seconds` of wall-clock time."""
    done = 0
    cpu, began = time.process_time(), time.perf_counter()
    deadline = began + max_seconds
    while done < max_ops:
        operation()
        done += 1
        if done % 64 == 0 and time.perf_counter() >= deadline:
            break
    return Sample(
        ops=done,
        cpu_seconds=time.process_time() - cpu,
        wall_seconds=time.perf_counter() - began,
    )


def raw_verifier(device: Device) -> Callable[[], None]:
    envelope = make_evidence(claims(b"\x00" * 32, 0, time.time()), device.key)
    message = pae(envelope.payload_type, envelope.payload)
    signature = envelope.signatures[0].sig
    public = device.key.public_key.cryptography_key
    if isinstance(public, ed25519.Ed25519PublicKey):
        ed_key = public
        return lambda: ed_key.verify(signature, message)
    ecdsa = ec.ECDSA(hashes.SHA256())
    return lambda: public.verify(signature, message, ecdsa)


def chain_verifier(device: Device) -> Callable[[], None]:
    def run() -> None:
        now = dt.datetime.now(dt.UTC)
        verify_device_chain(device.chain, device.anchor, now=now, revoked_serials=frozenset())

    return run


def claims(nonce: bytes, counter: int, now: float) -> EvidenceClaims:
    return EvidenceClaims(
        device_id=DEVICE,
        nonce=nonce,
        issued_at=now,
        boot_epoch="bench-boot",
        counter=counter,
        measurements=MEASUREMENTS,
    )


class Appraiser:
    """Appraises fresh evidence; signs it in batches whose cost is kept off the clock."""

    def __init__(self, device: Device) -> None:
        self.device = device
        self.nonces = NonceIssuer(ttl_seconds=60)
        self.counter = 0
        self.failures: list[str] = []

    def _batch(self) -> list[bytes]:
        now = time.time()
        batch = []
        for _ in range(BATCH):
            self.counter += 1
            nonce = self.nonces.issue(DEVICE, now)
            envelope = make_evidence(claims(nonce, self.counter, now), self.device.key)
            batch.append(envelope.to_json())
        return batch

    def _appraise(self, evidence: bytes, last_counter: int) -> None:
        result = appraise(
            evidence,
            expected_device_id=DEVICE,
            certificate_chain=self.device.chain,
            trust_anchor=self.device.anchor,
            registered_fingerprints=self.device.fingerprints,
            revoked_serials=frozenset(),
            reference=REFERENCE,
            nonces=self.nonces,
            last_counter=("bench-boot", last_counter),
            policy=POLICY,
            now=time.time(),
        )
        if not result.affirming(result.issued_at):
            self.failures.append("; ".join(f"{r.code.value}: {r.detail}" for r in result.reasons))

    def rate(self, max_ops: int, max_seconds: float) -> Sample:
        total = Sample(ops=0, cpu_seconds=0.0, wall_seconds=0.0)
        while total.ops < max_ops and total.wall_seconds < max_seconds:
            batch = self._batch()[: max_ops - total.ops]
            first = self.counter - BATCH + 1  # the counter of batch[0]
            cpu, began = time.process_time(), time.perf_counter()
            for i, evidence in enumerate(batch):
                self._appraise(evidence, first + i - 1)
            total = total + Sample(
                ops=len(batch),
                cpu_seconds=time.process_time() - cpu,
                wall_seconds=time.perf_counter() - began,
            )
        return total


def measure(device: Device, plan: Plan) -> tuple[Rates, list[str]]:
    verify, chain = raw_verifier(device), chain_verifier(device)
    appraiser = Appraiser(device)
    for run in (verify, chain):
        timed(run, plan.warmup_ops, plan.max_seconds)
    appraiser.rate(plan.warmup_ops, plan.max_seconds)
    rates = Rates(verify=[], chain=[], appraise=[])
    for _ in range(plan.rounds):
        rates.verify.append(timed(verify, plan.max_ops, plan.max_seconds))
        rates.chain.append(timed(chain, plan.max_ops, plan.max_seconds))
        rates.appraise.append(appraiser.rate(plan.max_ops, plan.max_seconds))
    return rates, appraiser.failures


def _rate_line(name: str, samples: list[Sample]) -> str:
    cpu = statistics.median(x.cpu_rate for x in samples)
    wall = statistics.median(x.wall_rate for x in samples)
    low, high = min(x.cpu_rate for x in samples), max(x.cpu_rate for x in samples)
    return (
        f"  {name:<8} {cpu:>10,.0f} /CPU-s   (rounds {low:,.0f} to {high:,.0f}; "
        f"wall clock {wall:,.0f} /s)"
    )


def report(device: Device, rates: Rates) -> None:
    verify = statistics.median(x.cpu_rate for x in rates.verify)
    chain = statistics.median(x.cpu_rate for x in rates.chain)
    appraised = statistics.median(x.cpu_rate for x in rates.appraise)
    kind = device.kind.value
    print(f"[{kind}] device key, root and intermediate CA all {kind}; chain = device + 1 CA")
    print(_rate_line("verify", rates.verify))
    print(_rate_line("chain", rates.chain))
    print(_rate_line("appraise", rates.appraise))
    print(
        f"  per appraisal: {1e6 / appraised:.1f} us CPU = {verify / appraised:.2f} raw verifies "
        f"(chain alone {1e6 / chain:.1f} us = {verify / chain:.2f} raw verifies)"
    )
    print(
        f"RATIO appraise/verify {kind:<10} = {appraised / verify:6.3f}   "
        f"(appraise {appraised:.1f}/CPU-s / raw verify {verify:.1f}/CPU-s)",
        flush=True,
    )


def header(plan: Plan, quick: bool) -> Iterator[str]:
    kind = "quick smoke run: numbers mean nothing" if quick else "full"
    yield f"qtestbed appraisal bench ({kind})"
    yield (
        f"  {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"cryptography {cryptography.__version__}, load average {os.getloadavg()[0]:.2f} at start"
    )
    yield (
        f"  {plan.rounds} alternating round(s); each measurement at most {plan.max_ops:,} "
        f"operations / {plan.max_seconds} s after {plan.warmup_ops} warm-up; medians of "
        "rates per CPU second of this process"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--quick", action="store_true", help="a fraction of a second per loop: a smoke test"
    )
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    print(*header(plan, args.quick), sep="\n", flush=True)
    errors = 0
    for kind in (KeyKind.ED25519, KeyKind.ECDSA_P256):
        device = make_device(kind)
        rates, failures = measure(device, plan)
        report(device, rates)
        if failures:
            errors += len(failures)
            print(f"  ERRORS: {len(failures)} appraisals did not affirm, first: {failures[0]}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
