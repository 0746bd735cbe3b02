"""Paired comparisons of two latency samples, with the standard library only.

Each pair is two calls measured back to back (in a random order), so slow drift of the machine
cancels out of the difference. `compare` gives the median paired difference, the ratio of the
two medians, an exact two-sided sign test and a Wilcoxon signed-rank test (normal
approximation with the tie correction; fine for the hundreds of pairs measured here).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True, slots=True)
class SignTest:
    above: int  # pairs whose first call was slower
    below: int  # pairs whose first call was faster (ties are left out)
    p: float  # exact two-sided binomial p-value against "either is as likely"


@dataclass(frozen=True, kw_only=True, slots=True)
class SignedRank:
    z: float  # standardised W+ (positive: the first call tends to be slower)
    p: float  # two-sided, normal approximation


@dataclass(frozen=True, kw_only=True, slots=True)
class Comparison:
    """The first sample against the second, pair by pair (seconds in, seconds out)."""

    pairs: int
    median_first: float
    median_second: float
    median_difference: float  # median of (first - second) over the pairs
    sign: SignTest
    signed_rank: SignedRank

    @property
    def ratio(self) -> float:
        """Median of the first over median of the second: 1.00 when they cost the same."""
        return self.median_first / self.median_second if self.median_second > 0 else math.nan


def compare(first: Sequence[float], second: Sequence[float]) -> Comparison:
    if len(first) != len(second) or not first:
        raise ValueError("need the same, non-zero number of samples on both sides")
    differences = [a - b for a, b in zip(first, second, strict=True)]
    return Comparison(
        pairs=len(differences),
        median_first=statistics.median(first),
        median_second=statistics.median(second),
        median_difference=statistics.median(differences),
        sign=sign_test(differences),
        signed_rank=signed_rank(differences),
    )


def sign_test(differences: Sequence[float]) -> SignTest:
    above = sum(1 for d in differences if d > 0)
    below = sum(1 for d in differences if d < 0)
    n = above + below
    if n == 0:
        return SignTest(above=0, below=0, p=1.0)
    tail = sum(math.comb(n, k) for k in range(min(above, below) + 1))
    # Exact integers until the one division: 2**n overflows a float long before n = 1,000.
    return SignTest(above=above, below=below, p=min(1.0, 2 * tail / 2**n))


def signed_rank(differences: Sequence[float]) -> SignedRank:
    nonzero = sorted((abs(d), d > 0) for d in differences if d != 0)
    n = len(nonzero)
    if n == 0:
        return SignedRank(z=0.0, p=1.0)
    w_plus = 0.0
    tie_term = 0
    start = 0
    while start < n:  # average ranks over runs of equal magnitudes
        end = start
        while end + 1 < n and nonzero[end + 1][0] == nonzero[start][0]:
            end += 1
        rank = (start + end) / 2 + 1
        w_plus += rank * sum(1 for _, positive in nonzero[start : end + 1] if positive)
        size = end - start + 1
        tie_term += size**3 - size
        start = end + 1
    mean = n * (n + 1) / 4
    variance = n * (n + 1) * (2 * n + 1) / 24 - tie_term / 48
    if variance <= 0:
        return SignedRank(z=0.0, p=1.0)
    z = (w_plus - mean) / math.sqrt(variance)
    # erfc keeps the tail exact far out; 1 - cdf(|z|) rounds to 0 beyond |z| of about 8.
    return SignedRank(z=z, p=math.erfc(abs(z) / math.sqrt(2)))
